//! The App Store Connect webhook reconciler: a route with `spec.appStoreConnect` gets its own webhook in
//! App Store Connect, kept equal to the route (URL, secret, event types, `enabled`), proven by a ping, and
//! deleted with the route.
//!
//! Status ownership: the route controller writes `status` by server-side apply; this reconciler applies
//! only `status.appStoreConnect` and the `WebhookRegistered`/`WebhookVerified` conditions, under its own
//! field manager ([`FIELD_MANAGER`]). `conditions` is a list keyed by `type`, so each condition has exactly
//! one writer and neither apply removes the other's fields. The route controller reads
//! `WebhookRegistered` from the object to decide `Ready`.
//!
//! Cost: App Store Connect is called only when something the route controls changed since the last sync
//! (spec, public URL, Secret `resourceVersion`), when a ping is owed, and on the slow re-read
//! (`--webhook-resync-interval`) that repairs edits made in App Store Connect. The Secret is read again
//! only when it is seen to change (the Secret watch, or this replica's receiver), when the route's spec
//! or its `reconcile-requested-at` annotation changes, or every `--secret-recheck-interval`: an idle
//! pass makes no call at all.

pub mod catch_up;
pub mod catch_up_controller;
mod cleanup;
pub mod plan;
mod secret;
pub mod state;
mod sync;
mod written;

use super::Error;
use super::context::{Context, CredentialProblem};
use crate::asc::api::AscClient;
use crate::asc::webhooks::{WebhookError, Webhooks};
use crate::controllers::next_look::Next;
use crate::resources::WebhookRoute;
use crate::resources::conditions::Condition;
use crate::resources::route_asc::{
    AppStoreConnectStatus, CatchUpStatus, WEBHOOK_REGISTERED, WEBHOOK_VERIFIED,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::finalizer::{self, Event as Finalize};
use kube::{Api, ResourceExt};
use plan::{Blocked, Desired, Step};
use secret::WebhookSecret;
use std::sync::Arc;
use sync::Synced;
use written::{known_asc, known_conditions};

use crate::resources::names::{
    FIELD_MANAGER_ASC as FIELD_MANAGER, FINALIZER_ASC_WEBHOOK as FINALIZER,
};

/// Reconciles the App Store Connect side of one route.
pub async fn reconcile(route: Arc<WebhookRoute>, ctx: Arc<Context>) -> Result<Next, Error> {
    written::settle(&ctx, &route);
    let api: Api<WebhookRoute> =
        Api::namespaced(ctx.client.clone(), &route.namespace().unwrap_or_default());
    if route.spec.app_store_connect.is_none() {
        release_unmanaged(&ctx, &api, &route).await?;
        return Ok(Next::Change);
    }
    // kube's finalizer helper speaks kube's `Action`, which does not tell its wait: the pass's own answer
    // is carried past it. When the helper only added or removed the finalizer, that write wakes the route.
    let chosen = std::sync::Mutex::new(Next::Change);
    finalizer::finalizer(&api, FINALIZER, route, |event| async {
        let next = match event {
            Finalize::Apply(r) => apply(r, &ctx).await?,
            Finalize::Cleanup(r) => cleanup::cleanup(r, &ctx).await?,
        };
        *chosen.lock().unwrap_or_else(|e| e.into_inner()) = next;
        Ok::<_, Error>(kube::runtime::controller::Action::await_change())
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(Box::new(other)),
    })?;
    Ok(chosen.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// `spec.appStoreConnect` was removed: stop managing. The webhook is left in App Store Connect (without
/// the block there is no deletion policy to go by, and leaving is the choice that loses nothing).
async fn release_unmanaged(
    ctx: &Context,
    api: &Api<WebhookRoute>,
    route: &WebhookRoute,
) -> Result<(), Error> {
    let name = route.name_any();
    if route.finalizers().iter().any(|f| f == FINALIZER) {
        let rest: Vec<&String> = route
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        // The resourceVersion makes this a compare-and-swap: a finalizer added meanwhile is never lost.
        let patch = serde_json::json!({"metadata": {
            "finalizers": rest, "resourceVersion": route.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
    }
    let has_status = route
        .status
        .as_ref()
        .is_some_and(|s| s.app_store_connect.is_some())
        || !state::owned_conditions(route).is_empty();
    if has_status {
        apply_status(api, &name, None, &[]).await?;
    }
    if let Some(uid) = route.uid() {
        ctx.written_asc.remember(&uid, None);
    }
    Ok(())
}

async fn apply_status(
    api: &Api<WebhookRoute>,
    name: &str,
    asc: Option<&AppStoreConnectStatus>,
    conditions: &[Condition],
) -> Result<(), Error> {
    let patch = state::status_patch(asc, conditions);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)
    .map(drop)
}

/// Writes this reconciler's part of the status when it differs from what the route shows, and publishes
/// an Event when `WebhookRegistered` newly turns False. `catchUp` is catch-up's: it is written as last
/// written, whatever `asc` carries.
async fn write(
    ctx: &Context,
    route: &WebhookRoute,
    asc: Option<&AppStoreConnectStatus>,
    fresh: Vec<Condition>,
) -> Result<(), Error> {
    let _writing = ctx.written_asc.lock(&route.uid().unwrap_or_default()).await;
    let asc = asc.cloned().map(|mut asc| {
        asc.catch_up = known_asc(ctx, route).and_then(|k| k.catch_up);
        asc
    });
    write_locked(ctx, route, asc.as_ref(), fresh).await
}

/// Writes catch-up's `status.appStoreConnect.catchUp`, keeping the rest as last written; nothing when
/// the route no longer has a webhook.
async fn write_catch_up(
    ctx: &Context,
    route: &WebhookRoute,
    catch_up: CatchUpStatus,
) -> Result<(), Error> {
    let _writing = ctx.written_asc.lock(&route.uid().unwrap_or_default()).await;
    let Some(mut asc) = known_asc(ctx, route) else {
        return Ok(());
    };
    asc.catch_up = Some(catch_up);
    write_locked(ctx, route, Some(&asc), Vec::new()).await
}

/// [`write`] under the route's lock.
async fn write_locked(
    ctx: &Context,
    route: &WebhookRoute,
    asc: Option<&AppStoreConnectStatus>,
    fresh: Vec<Condition>,
) -> Result<(), Error> {
    let now = crate::time::now_rfc3339();
    let before = known_conditions(ctx, route);
    let conditions = state::next_conditions(route, &before, fresh, &now);
    let previous_asc = known_asc(ctx, route);
    if previous_asc.as_ref() == asc && before == conditions {
        return Ok(());
    }
    let recorded = route
        .status
        .as_ref()
        .and_then(|s| s.app_store_connect.as_deref());
    if before == conditions && state::only_progress_moved(recorded, asc, jiff::Timestamp::now()) {
        // Kept in memory, not written: see `state::only_progress_moved`.
        if let Some(uid) = route.uid() {
            ctx.written_asc
                .remember(&uid, Some((asc.cloned(), conditions)));
        }
        return Ok(());
    }
    let api: Api<WebhookRoute> =
        Api::namespaced(ctx.client.clone(), &route.namespace().unwrap_or_default());
    apply_status(&api, &route.name_any(), asc, &conditions).await?;
    if let Some(uid) = route.uid() {
        ctx.written_asc
            .remember(&uid, Some((asc.cloned(), conditions.clone())));
    }
    let was = before.iter().find(|c| c.type_ == WEBHOOK_REGISTERED);
    if let Some(now) = conditions.iter().find(|c| c.type_ == WEBHOOK_REGISTERED)
        && !now.is_true()
        && status_or_reason_changed(was, now)
    {
        ctx.event(route, true, &now.reason, now.message.clone())
            .await;
    }
    Ok(())
}

fn status_or_reason_changed(was: Option<&Condition>, now: &Condition) -> bool {
    was.is_none_or(|w| w.status != now.status || w.reason != now.reason)
}

fn registered(holds: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new(WEBHOOK_REGISTERED, holds, reason, message)
}

fn waiting_for_registration() -> Condition {
    state::unknown(
        WEBHOOK_VERIFIED,
        "NotRegistered",
        "a ping is sent once the webhook is registered",
    )
}

/// Records a reason registration cannot proceed, keeping what is known about the webhook.
async fn blocked(ctx: &Context, route: &WebhookRoute, b: Blocked) -> Result<(), Error> {
    let asc = known_asc(ctx, route);
    write(
        ctx,
        route,
        asc.as_ref(),
        vec![
            registered(false, b.reason, b.message),
            waiting_for_registration(),
        ],
    )
    .await
}

fn last_ping_time(route: &WebhookRoute) -> Option<&str> {
    route
        .status
        .as_ref()
        .and_then(|s| s.last_ping_time.as_deref())
}

/// What a failed call depended on: a change to any of it deserves a new attempt at once.
fn inputs_fingerprint(
    desired: &Desired,
    previous: Option<&AppStoreConnectStatus>,
    secret: &WebhookSecret,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{desired:?}").hash(&mut h);
    previous.and_then(|p| p.webhook_id.as_deref()).hash(&mut h);
    secret.version.hash(&mut h);
    h.finish()
}

/// This reconciler's name in [`crate::controllers::context::Nudges`].
const NUDGE: &str = "app-store-connect-webhook";

fn failure_key(route: &WebhookRoute) -> String {
    format!(
        "app-store-connect/{}/{}",
        route.namespace().unwrap_or_default(),
        route.name_any()
    )
}

async fn apply(route: Arc<WebhookRoute>, ctx: &Context) -> Result<Next, Error> {
    let recheck = ctx.settings.recheck_interval;
    let desired = match plan::desired(&route, ctx.settings.public_url.as_deref()) {
        Ok(d) => d,
        Err(b) => {
            blocked(ctx, &route, b).await?;
            return Ok(Next::After(recheck));
        }
    };
    // A person asked for a fresh look: the Secret, App Store Connect's copy of the webhook and its
    // delivery log are read now, and a call held back after a failure is tried again.
    let nudged = ctx.nudges.pending(NUDGE, route.as_ref());
    if nudged {
        ctx.webhook_secrets.forget(&route);
        ctx.caught_up.forget(&failure_key(&route));
        ctx.holds.release(&failure_key(&route));
        ctx.nudges.answered(NUDGE, route.as_ref());
    }
    let secret = match secret::current(ctx, &route).await? {
        Ok(s) => s,
        Err(b) => {
            blocked(ctx, &route, b).await?;
            return Ok(Next::After(recheck));
        }
    };
    let now = jiff::Timestamp::now();
    let previous = known_asc(ctx, &route);
    let read_every = plan::read_interval(
        ctx.settings.webhook_resync_interval,
        &route.uid().unwrap_or_default(),
    );
    let step = if nudged {
        Step::Read
    } else {
        plan::next_step(
            &desired,
            previous.as_ref(),
            &secret.version,
            now,
            read_every,
        )
    };
    // Owed: never requested since the last change, or requested and unanswered past its re-send time.
    let ping_owed = previous.as_ref().is_some_and(|p| {
        p.ping_requested_time.is_none()
            || state::resend_due(p, last_ping_time(&route), now, &ping_policy(ctx))
    });
    if let (Step::Idle(left), Some(asc), false) = (&step, previous.clone(), ping_owed) {
        return idle(ctx, &route, &desired, asc, *left, now).await;
    }

    let key = failure_key(&route);
    let fingerprint = inputs_fingerprint(&desired, previous.as_ref(), &secret);
    if let Some(left) = ctx.holds.held(&key, fingerprint) {
        // The last call failed for these very inputs; this pass was caused by writing that failure.
        return Ok(Next::After(left));
    }
    let client = match credential(ctx, &route).await? {
        Ok(c) => c,
        Err(b) => {
            blocked(ctx, &route, b).await?;
            return Ok(Next::After(recheck));
        }
    };
    let synced = if step == Step::Read {
        sync::sync(&client, &desired, previous.as_ref(), &secret).await
    } else {
        Ok(Synced::unchanged(previous.as_ref(), &desired, &secret))
    };
    match synced {
        Ok(synced) => record_synced(ctx, &route, &client, &desired, synced, read_every).await,
        Err(e) => sync_failed(ctx, &route, &e, &key, fingerprint).await,
    }
}

/// The idle pass: nothing the route controls changed and no ping is owed, so App Store Connect is not
/// called. Apart from [`apply`] because it is the common, cheap path.
async fn idle(
    ctx: &Context,
    route: &WebhookRoute,
    desired: &Desired,
    asc: AppStoreConnectStatus,
    left: std::time::Duration,
    now: jiff::Timestamp,
) -> Result<Next, Error> {
    let recheck = ctx.settings.recheck_interval;
    let (verified, verify_due) = state::verified_condition(
        &asc,
        last_ping_time(route),
        &desired.attributes.url,
        now,
        &ping_policy(ctx),
    );
    write(ctx, route, Some(&asc), vec![verified]).await?;
    let next = [Some(left), Some(recheck), verify_due]
        .into_iter()
        .flatten()
        .min();
    Ok(Next::After(next.unwrap_or(recheck)))
}

/// A failed sync: says why on the route, and holds further calls for these inputs until the backoff (or,
/// when a person must act, a slow recheck) has passed.
async fn sync_failed(
    ctx: &Context,
    route: &WebhookRoute,
    e: &WebhookError,
    key: &str,
    fingerprint: u64,
) -> Result<Next, Error> {
    let recheck = ctx.settings.recheck_interval;
    let (reason, message) = failure(e);
    blocked(
        ctx,
        route,
        Blocked {
            reason,
            message: message.clone(),
        },
    )
    .await?;
    tracing::warn!(route = %route.name_any(), namespace = ?route.namespace(), %message, "App Store Connect webhook not in sync");
    let delay = if e.is_transient() {
        ctx.backoffs.failed(key)
    } else {
        // Needs a person (a role, an app id, a limit); a slow retry notices a fix made in App
        // Store Connect, where no watch can see it.
        recheck.saturating_mul(10)
    };
    ctx.holds
        .hold(key, fingerprint, std::time::Instant::now() + delay);
    Ok(Next::After(delay))
}

/// A successful sync: publishes its Event, sends the ping owed and records it all in status, then picks
/// the earliest time something needs another look.
async fn record_synced(
    ctx: &Context,
    route: &WebhookRoute,
    client: &AscClient,
    desired: &Desired,
    mut synced: Synced,
    read_every: std::time::Duration,
) -> Result<Next, Error> {
    let recheck = ctx.settings.recheck_interval;
    let key = failure_key(route);
    ctx.backoffs.succeeded(&key);
    ctx.holds.release(&key);
    if let Some(event) = &synced.event {
        ctx.event(route, false, event.0, event.1.clone()).await;
    }
    let ping_failed = !request_ping(ctx, route, client, &mut synced).await;
    let (verified, verify_due) = state::verified_condition(
        &synced.status,
        last_ping_time(route),
        &desired.attributes.url,
        jiff::Timestamp::now(),
        &ping_policy(ctx),
    );
    write(
        ctx,
        route,
        Some(&synced.status),
        vec![
            registered(true, synced.reason, synced.message.clone()),
            verified,
        ],
    )
    .await?;
    let retry_ping = ping_failed.then(|| ctx.backoffs.failed(&key));
    let next = [Some(read_every), Some(recheck), verify_due, retry_ping]
        .into_iter()
        .flatten()
        .min();
    Ok(Next::After(next.unwrap_or(recheck)))
}

fn ping_policy(ctx: &Context) -> state::PingPolicy {
    state::PingPolicy {
        verify_timeout: ctx.settings.webhook_verify_timeout,
        resend_after: ctx.settings.webhook_ping_resend_after,
        max_resends: ctx.settings.webhook_ping_resends,
    }
}

/// Requests the test ping owed: the first after a create or change, or a re-send of one that has not
/// arrived in time (a delivery Apple could not complete is, as far as Apple documents, not retried).
/// Records it in `synced`; answers false when a request owed failed (tried again after a backoff).
async fn request_ping(
    ctx: &Context,
    route: &WebhookRoute,
    client: &AscClient,
    synced: &mut Synced,
) -> bool {
    let first = synced.status.ping_requested_time.is_none();
    let resend = !first
        && state::resend_due(
            &synced.status,
            last_ping_time(route),
            jiff::Timestamp::now(),
            &ping_policy(ctx),
        );
    if !first && !resend {
        return true;
    }
    // Requested before the call so a ping recorded within the same second counts.
    let at = crate::time::now_rfc3339();
    if let Err(e) = Webhooks::new(client).ping(&synced.id).await {
        tracing::warn!(route = %route.name_any(), error = %crate::text::error_chain(&e), "test ping not sent; retrying after a backoff");
        return false;
    }
    let status = &mut synced.status;
    if first {
        status.ping_requested_time = Some(at);
        status.ping_resends = None;
        status.ping_resent_time = None;
        return true;
    }
    let n = status.ping_resends.unwrap_or(0) + 1;
    status.ping_resends = Some(n);
    status.ping_resent_time = Some(at);
    let note = format!(
        "the test ping requested at {} has not reached the receiver; requested it again ({n} of at most {})",
        status.ping_requested_time.as_deref().unwrap_or_default(),
        ctx.settings.webhook_ping_resends
    );
    tracing::info!(route = %route.name_any(), namespace = ?route.namespace(), %note, "test ping re-sent");
    ctx.event(route, false, "PingResent", note).await;
    true
}

async fn credential(
    ctx: &Context,
    route: &WebhookRoute,
) -> Result<Result<AscClient, Blocked>, Error> {
    let namespace = route.namespace().unwrap_or_default();
    let Some(cred) = &route.spec.credential_ref else {
        return Ok(Err(Blocked {
            reason: "CredentialNotReady",
            message: "spec.appStoreConnect needs spec.credentialRef".into(),
        }));
    };
    let trust = ctx.settings.secret_recheck_interval;
    let watched = ctx
        .stores
        .credentials
        .get(&kube::runtime::reflector::ObjectRef::new(&cred.name).within(&namespace));
    match ctx
        .asc_clients
        .resolve_trusted(&namespace, &cred.name, trust, watched.as_deref())
        .await
    {
        Ok(resolved) => Ok(Ok(resolved.client)),
        Err(
            problem @ CredentialProblem::Unusable {
                transient: true, ..
            },
        ) => Err(Error::Credential(problem)),
        Err(CredentialProblem::Unusable {
            reason, message, ..
        }) => Ok(Err(Blocked {
            reason: "CredentialNotReady",
            message: format!(
                "AscCredential {namespace}/{}: {reason}: {message}",
                cred.name
            ),
        })),
    }
}

/// The `WebhookRegistered` reason and message for a failed sync.
fn failure(e: &WebhookError) -> (&'static str, String) {
    let chain = crate::text::error_chain(e);
    let reason = match e {
        WebhookError::Forbidden(_) => "Forbidden",
        WebhookError::TokenScopeRefused(_) => "TokenScopeRefused",
        WebhookError::AppNotFound { .. } => "AppNotFound",
        WebhookError::LimitReached { .. } => "LimitReached",
        WebhookError::Rejected { .. } => "Rejected",
        WebhookError::Unavailable(_) => "AppStoreConnectUnavailable",
        WebhookError::WebhookNotFound { .. } => "AppStoreConnectUnavailable",
        WebhookError::Malformed(_) | WebhookError::Other(_) => "AppStoreConnectUnavailable",
    };
    let message = match e {
        WebhookError::Unavailable(_) => format!("{chain}; retrying with backoff"),
        _ => chain,
    };
    (reason, crate::text::truncate(&message, 900))
}
