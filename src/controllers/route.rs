//! The `WebhookRoute` controller: reads what the route refers to, decides readiness (pure, in
//! `route_status`), counts and prunes deliveries, and applies the status.
//!
//! It runs when a route changes, when one of its deliveries changes (they are owned by the route), when
//! a referenced credential changes, and every `--recheck-interval` otherwise, since Secrets are read by name rather
//! than watched.

use super::context::Context;
use super::route_status::{self, RouteFacts};
use super::{Error, status};
use crate::receiver::record::LABEL_ROUTE;
use crate::resources::conditions::{self, Condition};
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::sync::Arc;

/// Reconciles one route.
pub async fn reconcile(route: Arc<WebhookRoute>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = route.namespace().unwrap_or_default();
    let name = route.name_any();
    let facts = read_facts(&ctx, &route, &namespace).await?;
    let problems = route_status::problems(&route, &facts);

    let deliveries_api: Api<WebhookDelivery> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{LABEL_ROUTE}={}", crate::naming::label_value(&name));
    let listed = deliveries_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?;
    let uid = route.uid();
    let mine: Vec<&WebhookDelivery> = listed
        .items
        .iter()
        .filter(|d| {
            d.spec.route == name
                && d.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let prune = route_status::to_prune(&mine, route.spec.history_limit());

    let new_status = route_status::desired_status(
        &route,
        &mine,
        &prune,
        &problems,
        ctx.settings.public_url.as_deref(),
        &crate::time::now_rfc3339(),
    );
    if route
        .status
        .as_ref()
        .map(route_status::route_controller_part)
        .as_ref()
        != Some(&new_status)
    {
        let api: Api<WebhookRoute> = Api::namespaced(ctx.client.clone(), &namespace);
        status::apply(&api, &name, &new_status)
            .await
            .map_err(Error::Kube)?;
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
            ctx.event(route.as_ref(), true, &r.reason, r.message.clone())
                .await;
        }
    }
    // Counted in status first: a crash between the two steps can only double-count, never lose a delivery.
    for d in prune {
        match deliveries_api
            .delete(&d.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(Action::requeue(ctx.settings.recheck_interval))
}

async fn read_facts(
    ctx: &Context,
    route: &WebhookRoute,
    namespace: &str,
) -> Result<RouteFacts, Error> {
    let mut facts = RouteFacts::default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in route_status::referenced_secrets(route) {
        let keys = secrets
            .get_opt(&name)
            .await
            .map_err(Error::Kube)?
            .map(|s| s.data.unwrap_or_default().into_keys().collect());
        facts.secrets.insert(name, keys);
    }
    if let Some(c) = &route.spec.credential_ref {
        let creds: Api<AscCredential> = Api::namespaced(ctx.client.clone(), namespace);
        facts.credential = Some(creds.get_opt(&c.name).await.map_err(Error::Kube)?);
    }
    Ok(facts)
}
