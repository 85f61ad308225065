//! The controllers: deliveries into work, routes and credentials into truthful status. They run on the
//! leader only; the receiver runs on every replica.

pub(crate) mod admission;
pub(crate) mod asc_webhook;
pub(crate) mod context;
pub(crate) mod credential;
pub(crate) mod delivery;
pub(crate) mod delivery_index;
mod delivery_wiring;
pub(crate) mod digest;
pub(crate) mod error;
pub(crate) mod event_recorder;
pub(crate) mod impersonation;
pub(crate) mod match_lint;
pub mod matching;
pub(crate) mod next_look;
pub(crate) mod resource_kinds;
pub(crate) mod route;
pub(crate) mod route_status;
mod route_wakes;
pub(crate) mod secret_watch;
pub(crate) mod seen;
pub(crate) mod shared_watch;
mod status;
pub(crate) mod throttle;

pub(crate) use admission::queued;
pub(crate) use context::{Context, Process, Settings, Stores};
pub(crate) use error::Error;

use crate::metrics::{
    ControllerLabels, Metrics, ReconcileErrorLabels, ReconcileLabels, WatchLabels,
};
use crate::resources::names::ANNOTATION_LAST_APPLIED;
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use crate::watch_retry::{LIST_PAGE_SIZE, api, retrying};
use admission::{Admission, admitted_controller, refs};
use futures::StreamExt;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use next_look::{Next, NextLooks};
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

/// Wraps a reconciler with metrics and failure bookkeeping.
async fn instrumented<K, F, Fut, T>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    controller: &'static str,
    f: F,
) -> Result<T, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let k = key(obj.as_ref());
    let result = f(obj.clone(), ctx.clone()).await;
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
    match &result {
        Ok(_) => ctx.backoffs.succeeded(&k),
        Err(e) => failed(&ctx, obj.as_ref(), controller, e).await,
    }
    result
}

/// Counts a failed reconcile by its kind and says so on the object, the kind as the Event's reason: a
/// person tells an App Store Connect 429 from a Secret that cannot be read without the logs.
async fn failed<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    controller: &'static str,
    e: &Error,
) {
    let category = e.category();
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReconcileErrorLabels {
            controller,
            category: category.metric_label(),
        })
        .inc();
    let note = format!(
        "{controller} reconcile failed: {}",
        crate::text::error_chain(e)
    );
    ctx.event(obj, true, category.event_reason(), note).await;
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoffs.failed(&key(obj.as_ref()));
    tracing::warn!(object = %key(obj.as_ref()), error = %crate::text::error_chain(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Bounded concurrency: each reconcile holds API connections, and a burst (1,000 routes at start-up)
/// must not open a connection per object.
fn controller_config(ctx: &Context) -> controller::Config {
    controller::Config::default().concurrency(ctx.settings.max_concurrent_reconciles)
}

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
    K: Cached,
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
    let stream = reflector(writer, retrying(events, report).map(Ok)).applied_objects();
    (reader, stream)
}

/// Logs and counts what a controller's stream yields besides successful reconciles: runner errors.
/// Failed reconciles are counted and logged by `instrumented` and `error_policy` already, and watch
/// errors never get here: `watch_retry::retrying` reported them before the controller saw the stream.
async fn report<K, S>(
    stream: S,
    controller: &'static str,
    metrics: Metrics,
    admission: Option<Arc<Admission>>,
) where
    K: Resource,
    S: futures::Stream<
            Item = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
        >,
{
    stream
        .for_each(|result| {
            match result {
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(%obj, controller, "object gone before its reconcile");
                    if let Some(a) = &admission {
                        a.started(obj.namespace.as_deref(), &obj.name);
                    }
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

/// What a controller's cache and queue need of the objects they hold.
pub(crate) trait Cached:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Runs `reconcile` as controller `name` over `triggers`, admitted as fast as its reconciles start (see
/// [`admission`]), with the shared concurrency, shutdown, metrics and error policy.
fn run_admitted<K, S, F, Fut>(
    ctx: &Arc<Context>,
    name: &'static str,
    triggers: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    store: Store<K>,
    shutdown: S,
    reconcile: F,
) -> impl Future<Output = ()> + Send + 'static
where
    K: Cached,
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Next, Error>> + Send + 'static,
{
    // Long waits for the next look are kept in `looks`, which hands each object back through the
    // admission like any other trigger.
    let looks = NextLooks::new();
    let triggers = futures::stream::select(triggers, looks.clone().due());
    let (controller, admission) =
        admitted_controller(triggers, store, ctx.settings.max_concurrent_reconciles);
    let starts = admission.clone();
    let runs = controller
        .with_config(controller_config(ctx))
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, c| {
                starts.reconciling(obj.as_ref());
                let looks = looks.clone();
                async move {
                    let next = instrumented(obj.clone(), c, name, reconcile).await?;
                    Ok(looks.action(obj.as_ref(), next))
                }
            },
            error_policy,
            ctx.clone(),
        );
    report(runs, name, ctx.metrics.clone(), Some(admission))
}

/// What one of the controllers' watches does with its errors.
fn watch_reporter(
    controller: &'static str,
    watched: &'static str,
    metrics: &Metrics,
) -> impl FnMut(&watcher::Error) + Send + use<> {
    crate::watch_retry::reporter(controller, watched, metrics, |_| {})
}

/// How often at most deliveries' changes wake their route's reconcile (its status write).
const ROUTE_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The route controller: each route's readiness, counts and pruning, woken by its deliveries (one watch
/// of every delivery feeds the index it counts from), by the credentials it names and by changes of the
/// Secrets it names.
fn route_controller<S>(
    ctx: &Arc<Context>,
    ns: Option<&str>,
    routes_to_status: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    credential_changes: futures::channel::mpsc::Receiver<Arc<AscCredential>>,
    secrets_changed: futures::channel::mpsc::Receiver<ObjectRef<WebhookRoute>>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = ctx.client.clone();
    let route_store = ctx.stores.routes.clone();
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
    let release_metrics = ctx.metrics.release.export_from(route_store.clone());
    let naming_credential = route_store.clone();
    let credential_triggers = credential_changes.flat_map(move |cred| {
        let cred_ns = cred.namespace();
        let cred_name = cred.name_any();
        let named: Vec<_> = naming_credential
            .state()
            .into_iter()
            .filter(|r| {
                r.namespace() == cred_ns
                    && r.spec
                        .credential_ref
                        .as_ref()
                        .is_some_and(|c| c.name == cred_name)
            })
            .map(|r| queued(r.as_ref()))
            .collect();
        futures::stream::iter(named)
    });
    let triggers = futures::stream::select_all([
        refs(route_wakes::changes_to_act_on(routes_to_status)).boxed(),
        route_triggers.boxed(),
        secrets_changed.boxed(),
        credential_triggers.boxed(),
    ]);
    let routes = run_admitted(
        ctx,
        "route",
        triggers,
        route_store,
        shutdown,
        route::reconcile,
    );
    Box::pin(async move {
        routes.await;
        drop(state_metrics);
        drop(release_metrics);
    })
}

/// The credential controller: each credential's key and its verification against App Store Connect.
fn credential_controller<S>(
    ctx: &Arc<Context>,
    credentials_to_check: futures::channel::mpsc::Receiver<Arc<AscCredential>>,
    secrets_changed: futures::channel::mpsc::Receiver<ObjectRef<AscCredential>>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let triggers = futures::stream::select(refs(credentials_to_check), secrets_changed);
    Box::pin(run_admitted(
        ctx,
        "credential",
        triggers,
        ctx.stores.credentials.clone(),
        shutdown,
        credential::reconcile,
    ))
}

/// The App Store Connect webhook controller over the shared routes.
fn webhook_controller<S>(
    ctx: &Arc<Context>,
    routes_to_register: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    webhook_store: Store<WebhookRoute>,
    secrets_changed: futures::channel::mpsc::Receiver<ObjectRef<WebhookRoute>>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    // Its own controller and queue over the shared routes: it runs on a different schedule (slow App Store
    // Connect re-reads) and must not wait behind the route controller's delivery-driven reconciles.
    let routes_to_register =
        routes_to_register.filter(|r| futures::future::ready(asc_webhook::state::concerns(r)));
    let triggers = futures::stream::select(refs(routes_to_register), secrets_changed);
    Box::pin(run_admitted(
        ctx,
        "app-store-connect-webhook",
        triggers,
        webhook_store,
        shutdown,
        asc_webhook::reconcile,
    ))
}

/// The catch-up controller over the shared routes: its own queue, so a long pass of one route never
/// holds registration of another.
fn catch_up_controller<S>(
    ctx: &Arc<Context>,
    routes_to_catch_up: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    use asc_webhook::catch_up_controller as catch_up;
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
    let routes = routes_to_catch_up.filter(|r| futures::future::ready(catch_up::concerns(r)));
    // Every cached route, as kube's `reconcile_all_on` would, but through the admission.
    let store = ctx.stores.routes.clone();
    let every_route = recovered
        .unwrap_or_else(|| futures::stream::pending().boxed())
        .flat_map(move |()| {
            let all: Vec<_> = store.state().iter().map(|r| queued(r.as_ref())).collect();
            futures::stream::iter(all)
        });
    let triggers = futures::stream::select(refs(routes), every_route);
    Box::pin(run_admitted(
        ctx,
        "app-store-connect-catch-up",
        triggers,
        ctx.stores.routes.clone(),
        shutdown,
        catch_up::reconcile,
    ))
}

/// Waits for the controllers to stop, or drops them a grace period after shutdown.
async fn stop_with(
    controllers: impl Future<Output = ()>,
    watches: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) {
    // A controller whose store never synced (its CRD is missing) waits for that store even after
    // shutdown; a pod must still stop, so after a grace period the controllers are dropped, which
    // cancels whatever they still run.
    let stopped = async {
        // The shared route and credential watches run as long as the controllers they feed.
        tokio::pin!(controllers);
        tokio::select! {
            () = &mut controllers => {}
            () = watches => controllers.await,
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

/// A task that ends when this is dropped: a term's watches end with the term.
struct Stopped(tokio::task::JoinHandle<()>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One watch and one cache of `K` for the `N` controllers that follow it: the cache, the future that
/// drives the watch, and each controller's stream of changes.
fn shared_cache<K, const N: usize>(
    process: &Process,
    ns: Option<&str>,
    stream: &'static str,
    watched: &'static str,
) -> (
    Store<K>,
    impl Future<Output = ()> + Send + 'static + use<K, N>,
    [futures::channel::mpsc::Receiver<Arc<K>>; N],
)
where
    K: Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let (store, changes) = slim_cache(
        api::<K>(&process.client, ns),
        watcher::Config::default().any_semantic(),
        |_| {},
        watch_reporter(stream, watched, &process.metrics),
    );
    // `retrying` took the errors already: none reach the fan-out.
    let (drive, subscribers) = shared_watch::fan_out(changes, |_: &watcher::Error| {});
    (store, drive, subscribers)
}

/// Time the controllers get to finish running reconciles once shutdown is requested.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the five controllers for one leadership term, until `shutdown` resolves. The term's stores,
/// index and memories are built here and dropped when it ends: only `process` outlives the term.
pub async fn run(
    process: Arc<Process>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));

    let (delivery_store, delivery_stream) = delivery_wiring::delivery_cache(&process, ns);
    let (
        route_store,
        route_watch,
        [
            route_changes,
            routes_to_status,
            routes_to_register,
            routes_to_catch_up,
        ],
    ) = shared_cache::<WebhookRoute, 4>(&process, ns, "route", "webhookroutes");
    let (credential_store, credential_watch, [credential_changes, credentials_to_check]) =
        shared_cache::<AscCredential, 2>(&process, ns, "credential", "asccredentials");
    let stores = Stores {
        credentials: credential_store,
        routes: route_store,
        unfinished: delivery_store,
    };
    let ctx = Arc::new(Context::for_term(process, stores));

    let deliveries = delivery_wiring::deliveries_of_term(
        &ctx,
        namespace.clone(),
        delivery_stream,
        route_changes,
        shutdown.clone(),
    );

    // Changed Secrets wake the three controllers that read them.
    let (secret_watch, secrets_changed) = secret_watch::start(&ctx, ns);
    let routes = route_controller(
        &ctx,
        ns,
        routes_to_status,
        credential_changes,
        secrets_changed.routes,
        shutdown.clone(),
    );

    let credentials = credential_controller(
        &ctx,
        credentials_to_check,
        secrets_changed.credentials,
        shutdown.clone(),
    );

    let webhooks = webhook_controller(
        &ctx,
        routes_to_register,
        ctx.stores.routes.clone(),
        secrets_changed.webhooks,
        shutdown.clone(),
    );

    let catch_up = catch_up_controller(&ctx, routes_to_catch_up, shutdown.clone());

    let controllers = async {
        tokio::join!(deliveries, routes, credentials, webhooks, catch_up);
    };
    // Each shared watch is its own task: polled inside the controllers' task, its stream would sit
    // under every controller's in one deep poll (a stack overflow in debug builds at start-up).
    let mut route_watch = Stopped(tokio::spawn(route_watch));
    let mut credential_watch = Stopped(tokio::spawn(credential_watch));
    let watches = async {
        let _ = tokio::join!(&mut route_watch.0, &mut credential_watch.0);
    };
    stop_with(controllers, watches, shutdown).await;
    secret_watch.abort();
    ctx.resource_kinds.stop();
}
