//! Deleting a route: its App Store Connect webhook goes first (unless `Retain`), and the finalizer never
//! holds the route (or its namespace) for longer than `--webhook-release-timeout`.

use super::{Context, Error, credential, failure, registered, write};
use crate::asc::webhooks::Webhooks;
use crate::controllers::next_look::Next;
use crate::resources::WebhookRoute;
use crate::resources::route_asc::DeletionPolicy;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// Whether the finalizer should let go although the webhook could not be deleted: `deleting_since` is
/// the route's `deletionTimestamp`. Pure.
pub fn give_up(
    deleting_since: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    bound: Duration,
) -> bool {
    deleting_since.is_none_or(|since| {
        Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO) >= bound
    })
}

pub(super) async fn cleanup(route: Arc<WebhookRoute>, ctx: &Context) -> Result<Next, Error> {
    let known = super::known_asc(ctx, &route);
    let asc = known.as_ref();
    let Some(id) = asc.and_then(|a| a.webhook_id.clone()) else {
        return Ok(Next::Change);
    };
    let policy = route
        .spec
        .app_store_connect
        .as_ref()
        .map(|a| a.deletion_policy)
        .unwrap_or_default();
    if policy == DeletionPolicy::Retain {
        forget_webhook(ctx, &route);
        ctx.event(
            route.as_ref(),
            false,
            "WebhookRetained",
            format!("deletionPolicy Retain: App Store Connect webhook {id} is left as it is"),
        )
        .await;
        return Ok(Next::Change);
    }
    let (reason, message, cause) = match delete(ctx, &route, &id).await? {
        Ok(existed) => {
            let note = if existed {
                format!("deleted App Store Connect webhook {id}")
            } else {
                format!("App Store Connect webhook {id} was already gone")
            };
            ctx.event(route.as_ref(), false, "WebhookDeleted", note)
                .await;
            forget_webhook(ctx, &route);
            return Ok(Next::Change);
        }
        Err(why) => why,
    };
    let bound = ctx.settings.webhook_release_timeout;
    let since = route.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    if give_up(since, jiff::Timestamp::now(), bound) {
        ctx.event(
            route.as_ref(),
            true,
            "WebhookLeftBehind",
            format!(
                "could not delete App Store Connect webhook {id} within {} s ({reason}: {message}); \
                 released the route anyway — delete the webhook in App Store Connect by hand",
                bound.as_secs()
            ),
        )
        .await;
        return Ok(Next::Change);
    }
    let message = format!(
        "cannot delete App Store Connect webhook {id}: {message}; the route is released within {} s of its \
         deletion even if this keeps failing",
        bound.as_secs()
    );
    write(
        ctx,
        &route,
        asc,
        vec![registered(false, reason, message.clone())],
    )
    .await?;
    tracing::warn!(route = %route.name_any(), %message, "webhook deletion failed; retrying");
    Err(cause)
}

/// Why a deletion did not happen: the condition's reason and message, and the error that caused it.
type NotDeleted = (&'static str, String, Error);

/// Deletes webhook `id` in App Store Connect; whether it still existed, or why it was not deleted.
async fn delete(
    ctx: &Context,
    route: &WebhookRoute,
    id: &str,
) -> Result<Result<bool, NotDeleted>, Error> {
    Ok(match credential(ctx, route).await? {
        Err(b) => Err((
            b.reason,
            b.message.clone(),
            Error::CredentialNotUsable {
                reason: b.reason,
                message: b.message,
            },
        )),
        Ok(client) => Webhooks::new(&client).delete(id).await.map_err(|e| {
            let (reason, message) = failure(&e);
            (reason, message, Error::AppStoreConnect(e))
        }),
    })
}

/// A reconcile queued before the finalizer went may still see the route: it must not delete again.
fn forget_webhook(ctx: &Context, route: &WebhookRoute) {
    if let Some(uid) = route.metadata.uid.as_deref() {
        ctx.written_asc.remember(uid, Some((None, Vec::new())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_lets_go_after_the_bound() {
        let t0: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let bound = Duration::from_secs(600);
        let later = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        assert!(!give_up(Some(t0), later(599), bound));
        assert!(give_up(Some(t0), later(600), bound));
        assert!(
            give_up(None, t0, bound),
            "no deletion time known: never hold the route"
        );
    }
}
