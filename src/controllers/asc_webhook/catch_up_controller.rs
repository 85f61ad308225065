//! Catch-up's own reconciler, on its own queue: a long pass (fifty pages, a 429 waited out) never holds
//! the registration of other routes, and registration never waits behind a pass. It writes only
//! `status.appStoreConnect.catchUp`, under the route's lock (see [`super::write_catch_up`]).

use super::catch_up;
use crate::controllers::next_look::Next;
use crate::controllers::{Context, Error};
use crate::resources::WebhookRoute;
use crate::resources::route_asc::AppStoreConnectStatus;
use std::sync::Arc;
use std::time::Duration;

/// Whether `route` asks for catch-up at all: only those enter the queue.
pub fn concerns(route: &WebhookRoute) -> bool {
    route
        .spec
        .app_store_connect
        .as_ref()
        .is_some_and(|a| a.catch_up_interval_minutes().is_some())
}

/// Makes a due catch-up pass for one route and records it; answers when the next one is due.
pub async fn reconcile(route: Arc<WebhookRoute>, ctx: Arc<Context>) -> Result<Next, Error> {
    super::written::settle(&ctx, &route);
    if route.metadata.deletion_timestamp.is_some() {
        return Ok(Next::Change);
    }
    // Until registration recorded a webhook there is no log to read; its status write wakes this.
    let Some(asc) = super::known_asc(&ctx, &route) else {
        return Ok(Next::Change);
    };
    let Some(due) = due_in(&ctx, &route, &asc) else {
        return Ok(Next::Change);
    };
    if !due.is_zero() {
        return Ok(Next::After(due));
    }
    let recheck = ctx.settings.recheck_interval;
    let client = match super::credential(&ctx, &route).await? {
        Ok(client) => client,
        // Registration says why on the route; look again when it may have changed.
        Err(_) => return Ok(Next::After(recheck)),
    };
    let mut working = asc;
    let next = catch_up::pass_if_due(&ctx, &route, &client, &mut working).await?;
    if let Some(state) = working.catch_up {
        super::write_catch_up(&ctx, &route, state).await?;
    }
    Ok(next.map_or(Next::Change, Next::After))
}

/// When the next pass is due (zero: now; `None`: off or no webhook yet), without any call.
fn due_in(ctx: &Context, route: &WebhookRoute, asc: &AppStoreConnectStatus) -> Option<Duration> {
    let minutes = route
        .spec
        .app_store_connect
        .as_ref()?
        .catch_up_interval_minutes()?;
    asc.webhook_id.as_ref()?;
    Some(catch_up::next_pass_in(
        ctx,
        &super::failure_key(route),
        asc.catch_up.as_ref(),
        Duration::from_secs(minutes * 60),
    ))
}
