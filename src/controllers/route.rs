//! The `WebhookRoute` controller: reads what the route refers to, decides readiness (pure, in
//! `route_status`), counts and prunes deliveries, and applies the status.
//!
//! It is watch-driven: it runs when a route changes, when one of its deliveries changes (the delivery
//! index, fed by one watch, says which route), when a referenced credential changes, and when a Secret it
//! names changes (the Secret metadata watch, or this replica's receiver finding it missing or changed:
//! `secret_watch`). Counting never lists. What was read of the Secrets is kept per route and read again
//! only when one of them is seen to change, when the route's spec or its `reconcile-requested-at`
//! annotation changes, when a Ready route's `--secret-recheck-interval` (jittered) passes, or every
//! `--recheck-interval` while the route is not Ready. An idle Ready route costs nothing but that rare
//! re-read.

use super::context::{Context, SecretFacts};
use super::delivery_index::DeliverySummary;
use super::impersonation::Identity;
use super::match_lint;
use super::resource_kinds::KindFact;
use super::route_status::{self, RouteFacts};
use super::{Error, status};
use crate::actions::resource::TypeRef;
use crate::controllers::next_look::Next;
use crate::resources::conditions::{self, Condition};
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute, WebhookRouteStatus};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::DeleteParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This controller's name in [`crate::controllers::context::Nudges`].
const NUDGE: &str = "route";
/// How soon to look again while the delivery index is still loading its first list.
const INDEX_LOADING_RETRY: Duration = Duration::from_millis(500);
/// How soon to look again after a status write lost to a newer version of the route.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// Reconciles one route.
pub async fn reconcile(route: Arc<WebhookRoute>, ctx: Arc<Context>) -> Result<Next, Error> {
    if !ctx.deliveries.is_ready() {
        return Ok(Next::After(INDEX_LOADING_RETRY));
    }
    let namespace = route.namespace().unwrap_or_default();
    let name = route.name_any();
    let (secrets, fresh_until) = secret_facts(&ctx, &route, &namespace).await?;
    let facts = RouteFacts {
        secrets: secrets.secrets(),
        credential: credential_fact(&ctx, &route, &namespace).await?,
        missing_service_account: secrets.missing_service_account.clone(),
        kinds: kind_facts(&ctx, &route).await?,
    };
    let problems = route_status::problems(&route, &facts);
    let soon = Instant::now() + ctx.settings.recheck_interval;
    let fresh_until = if !problems.is_empty() && fresh_until > soon {
        // Trusted for long only while Ready: a route waiting for a Secret looks again soon.
        ctx.route_secrets.remember(
            &route,
            SecretFacts {
                fresh_until: soon,
                shortened: true,
                ..secrets
            },
        );
        soon
    } else if problems.is_empty() && secrets.shortened {
        // Ready now (its webhook got registered, say): the Secrets read a moment ago are trusted as long
        // as any Ready route's, instead of being read again at the short re-check.
        let until = Instant::now() + jittered(ctx.settings.secret_recheck_interval);
        ctx.route_secrets.remember(
            &route,
            SecretFacts {
                fresh_until: until,
                shortened: false,
                ..secrets
            },
        );
        until
    } else {
        fresh_until
    };

    let uid = route.uid();
    let owned = ctx.deliveries.of_route(&namespace, &name, uid.as_deref());
    let mine: Vec<&DeliverySummary> = owned.iter().collect();
    let prune = route_status::to_prune(&mine, route.spec.history_limit());

    let mut new_status = route_status::desired_status(
        &route,
        &mine,
        &prune,
        &problems,
        ctx.settings.public_url.as_deref(),
        &crate::time::now_rfc3339(),
    );
    match_lint::name_in_ready(&mut new_status, &match_lint::unknown_values(&route));
    if !write_status(&ctx, &route, &new_status).await? {
        return Ok(Next::After(STALE_RETRY));
    }
    // Observed only once the status that learned it is stored: a stale copy's write is refused above,
    // and a status re-read after a restart or by a new leader has nothing new to teach.
    let before = route.status.as_ref().map(|s| &s.release_timing);
    let learned = crate::timing::learned(
        before.unwrap_or(&Default::default()),
        &new_status.release_timing,
    );
    ctx.metrics.release.record(&namespace, &name, &learned);
    delete_pruned(&ctx, &namespace, &name, &prune, &owned).await?;
    let next = fresh_until.saturating_duration_since(Instant::now());
    Ok(Next::After(next.max(Duration::from_secs(1))))
}

/// Writes the route controller's part of the status if it changed, and an Event when the route stops
/// being Ready. `false`: the write lost to a newer version of the route.
async fn write_status(
    ctx: &Context,
    route: &WebhookRoute,
    new_status: &WebhookRouteStatus,
) -> Result<bool, Error> {
    if route
        .status
        .as_ref()
        .map(route_status::route_controller_part)
        .as_ref()
        == Some(new_status)
    {
        return Ok(true);
    }
    let namespace = route.namespace().unwrap_or_default();
    let name = route.name_any();
    let api: Api<WebhookRoute> = Api::namespaced(ctx.client.clone(), &namespace);
    // Counts build on the previous status (pruned deliveries live only there): a reconcile of a stale
    // copy must not write over a newer count.
    let applied =
        status::apply_if_unchanged(&api, &name, route.resource_version().as_deref(), new_status)
            .await
            .map_err(Error::Kube)?;
    if applied.is_none() {
        return Ok(false);
    }
    let was_ready = route
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, "Ready"))
        .map(Condition::is_true);
    let ready = conditions::find(&new_status.conditions, "Ready");
    if let Some(r) = ready
        && !r.is_true()
        && was_ready != Some(false)
    {
        ctx.event(route, true, &r.reason, r.message.clone()).await;
    }
    // A rule naming a value no documented event has: said once per new wording, as the route stays Ready.
    let was_message = route
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, "Ready"))
        .map(|c| c.message.as_str());
    if let Some(r) = ready
        && r.is_true()
        && r.reason == match_lint::REASON
        && was_message != Some(r.message.as_str())
    {
        ctx.event(route, true, match_lint::REASON, r.message.clone())
            .await;
    }
    Ok(true)
}

/// Deletes the deliveries pruned from the counts, and takes a replay asked for on a finished delivery
/// back into the delivery controller's watch.
async fn delete_pruned(
    ctx: &Context,
    namespace: &str,
    name: &str,
    prune: &[&DeliverySummary],
    owned: &[DeliverySummary],
) -> Result<(), Error> {
    // Counted in status first, then left out of counts until the watch shows them gone: a crash between
    // the two steps can only double-count, never lose a delivery.
    let pruned_now: Vec<String> = prune.iter().map(|d| d.name.clone()).collect();
    for d in &pruned_now {
        ctx.pruned.remember(namespace, d);
    }
    ctx.deliveries.mark_pruned(namespace, pruned_now);
    let deliveries_api: Api<WebhookDelivery> = Api::namespaced(ctx.client.clone(), namespace);
    for d in ctx.deliveries.pending_prunes(namespace, name) {
        match deliveries_api.delete(&d, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    // A replay asked for on a finished delivery: the finished label keeps it out of the delivery
    // controller's watch, so it comes off here (this watch sees every delivery).
    for d in owned.iter().filter(|d| d.replay_unseen) {
        crate::controllers::delivery::replay::unfinish(&deliveries_api, &d.name)
            .await
            .map_err(Error::Kube)?;
    }
    Ok(())
}

/// The route's Secrets as last read, or read now when the route changed or the reading is too old.
async fn secret_facts(
    ctx: &Context,
    route: &WebhookRoute,
    namespace: &str,
) -> Result<(SecretFacts, Instant), Error> {
    let generation = route.metadata.generation;
    // A person asked for a fresh look (`reconcile-requested-at`): read again whatever was cached.
    let nudged = ctx.nudges.pending(NUDGE, route);
    if let Some(cached) = ctx.route_secrets.get(route)
        && !nudged
        && cached.generation == generation
        && cached.fresh_until > Instant::now()
    {
        let until = cached.fresh_until;
        return Ok((cached, until));
    }
    let mut secrets = Vec::new();
    let wanted = route_status::referenced_keys(route);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in route_status::referenced_secrets(route) {
        let keys = api.get_opt(&name).await.map_err(Error::Kube)?.map(|s| {
            s.data
                .unwrap_or_default()
                .into_keys()
                .filter(|k| wanted.contains(k.as_str()))
                .map(String::into_boxed_str)
                .collect()
        });
        secrets.push((name.into_boxed_str(), keys));
    }
    let mut missing_service_account = None;
    if let Identity::ServiceAccount { name, .. } = ctx.action_identity(route) {
        let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
        if accounts
            .get_opt(&name)
            .await
            .map_err(Error::Kube)?
            .is_none()
        {
            missing_service_account = Some(name);
        }
    }
    let facts = SecretFacts {
        generation,
        secrets: secrets.into_boxed_slice(),
        missing_service_account,
        fresh_until: Instant::now() + jittered(ctx.settings.secret_recheck_interval),
        shortened: false,
    };
    ctx.route_secrets.remember(route, facts.clone());
    ctx.nudges.answered(NUDGE, route);
    let until = facts.fresh_until;
    Ok((facts, until))
}

/// What discovery says about the kinds the route's resource rules create; each one served is watched
/// from now on, so its objects wake their deliveries.
async fn kind_facts(
    ctx: &Context,
    route: &WebhookRoute,
) -> Result<BTreeMap<TypeRef, KindFact>, Error> {
    let mut out = BTreeMap::new();
    for t in route_status::resource_kinds(route) {
        let fact = ctx
            .resource_kinds
            .lookup(&ctx.client, &t)
            .await
            .map_err(Error::Kube)?;
        if let KindFact::Namespaced(ar) = &fact {
            ctx.resource_kinds.follow(ar);
        }
        out.insert(t, fact);
    }
    Ok(out)
}

/// ±20 %, so routes created together do not re-read together.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// The referenced credential, from the watched store (a GET only when the store has not seen it yet).
async fn credential_fact(
    ctx: &Context,
    route: &WebhookRoute,
    namespace: &str,
) -> Result<Option<Option<AscCredential>>, Error> {
    let Some(c) = &route.spec.credential_ref else {
        return Ok(None);
    };
    if let Some(found) = ctx
        .stores
        .credentials
        .get(&ObjectRef::new(&c.name).within(namespace))
    {
        return Ok(Some(Some(found.as_ref().clone())));
    }
    let creds: Api<AscCredential> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(Some(creds.get_opt(&c.name).await.map_err(Error::Kube)?))
}
