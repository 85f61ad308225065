//! One sync of a route's webhook with App Store Connect: read what is registered there, plan, and make
//! the one call the plan needs. Kept apart from the reconcile pass in `mod.rs`, which decides whether a
//! sync is owed and records its outcome.

use super::plan::{self, Desired, Plan};
use super::secret::WebhookSecret;
use crate::asc::api::AscClient;
use crate::asc::webhooks::{WebhookChange, WebhookError, Webhooks};
use crate::resources::route_asc::AppStoreConnectStatus;

/// The outcome of bringing App Store Connect in line.
pub(super) struct Synced {
    pub(super) id: String,
    pub(super) status: AppStoreConnectStatus,
    pub(super) reason: &'static str,
    pub(super) message: String,
    /// A Normal Event to publish: (reason, note).
    pub(super) event: Option<(&'static str, String)>,
}

impl Synced {
    pub(super) fn unchanged(
        previous: Option<&AppStoreConnectStatus>,
        desired: &Desired,
        secret: &WebhookSecret,
    ) -> Synced {
        let status = previous.cloned().unwrap_or_default();
        Synced {
            id: status.webhook_id.clone().unwrap_or_default(),
            message: in_sync_message(&status.webhook_id.clone().unwrap_or_default(), desired),
            status: AppStoreConnectStatus {
                observed_secret_version: Some(secret.version.clone()),
                ..status
            },
            reason: "InSync",
            event: None,
        }
    }
}

fn in_sync_message(id: &str, desired: &Desired) -> String {
    format!(
        "webhook {id} of app {} sends {} event type(s) to {}",
        desired.app_id,
        desired.attributes.event_types.len(),
        desired.attributes.url
    )
}

/// Reads App Store Connect, plans, and makes the one call the plan needs.
pub(super) async fn sync(
    client: &AscClient,
    desired: &Desired,
    previous: Option<&AppStoreConnectStatus>,
    secret: &WebhookSecret,
) -> Result<Synced, WebhookError> {
    let hooks = Webhooks::new(client);
    let recorded = previous.and_then(|p| p.webhook_id.clone());
    let (planned, gone) = read_and_plan(&hooks, desired, previous, secret, &recorded).await?;
    let now = crate::time::now_rfc3339();
    // `keep_ping`: the ping already requested (and its re-sends) still proves this webhook; after a
    // create or change a new one is owed.
    let status = |id: &str, keep_ping: bool| {
        let ping = previous.filter(|_| keep_ping);
        AppStoreConnectStatus {
            webhook_id: Some(id.to_owned()),
            app_id: Some(desired.app_id.clone()),
            last_sync_time: Some(now.clone()),
            observed_secret_version: Some(secret.version.clone()),
            registered: Some(desired.registered()),
            ping_requested_time: ping.and_then(|p| p.ping_requested_time.clone()),
            ping_resends: ping.and_then(|p| p.ping_resends),
            ping_resent_time: ping.and_then(|p| p.ping_resent_time.clone()),
            catch_up: previous.and_then(|p| p.catch_up.clone()),
        }
    };
    Ok(match planned {
        Plan::Create => {
            let created = hooks
                .create(&desired.app_id, &desired.attributes, secret.expose())
                .await?;
            let (reason, note) = created_event(gone, recorded, &created.id, desired);
            Synced {
                status: status(&created.id, false),
                reason: "Created",
                message: format!("{note}; it sends to {}", desired.attributes.url),
                event: Some((reason, note)),
                id: created.id,
            }
        }
        Plan::Patch {
            id,
            change,
            send_secret,
            adopted,
        } => {
            let note = update(&hooks, &id, change, send_secret, adopted, secret).await?;
            Synced {
                status: status(&id, false),
                reason: "Updated",
                message: note.clone(),
                event: Some(("WebhookUpdated", note)),
                id,
            }
        }
        Plan::InSync { id, adopted } => Synced {
            status: status(&id, !adopted),
            reason: "InSync",
            message: in_sync_message(&id, desired),
            event: None,
            id,
        },
        Plan::LimitReached => {
            return Err(WebhookError::LimitReached {
                app_id: desired.app_id.clone(),
            });
        }
    })
}

/// Reads the webhook the route recorded and, unless that one was found, the app's webhooks (to adopt
/// or count against the limit), then plans; also says whether the recorded one is `gone` (deleted in
/// App Store Connect). Apart from [`sync`] so the reads stay separate from the one write.
async fn read_and_plan(
    hooks: &Webhooks<'_>,
    desired: &Desired,
    previous: Option<&AppStoreConnectStatus>,
    secret: &WebhookSecret,
    recorded: &Option<String>,
) -> Result<(Plan, bool), WebhookError> {
    let same_app = previous.and_then(|p| p.app_id.as_deref()) == Some(desired.app_id.as_str());
    let by_id = match (recorded, same_app) {
        (Some(id), true) => Some(hooks.get(id).await?),
        (Some(id), false) => {
            // The app of a webhook cannot be changed: the old one goes, a new one is made.
            hooks.delete(id).await?;
            None
        }
        (None, _) => None,
    };
    let listed = match &by_id {
        Some(Some(_)) => Vec::new(),
        _ => hooks.list_for_app(&desired.app_id).await?,
    };
    let secret_changed = previous.and_then(|p| p.observed_secret_version.as_deref())
        != Some(secret.version.as_str());
    let gone = matches!(by_id, Some(None));
    let planned = plan::plan(
        desired,
        by_id.as_ref().map(Option::as_ref),
        &listed,
        secret_changed,
    );
    Ok((planned, gone))
}

/// The Event (reason, note) for a created webhook: a recreation when the recorded one was `gone`, so a
/// person sees that someone deleted it in App Store Connect.
fn created_event(
    gone: bool,
    recorded: Option<String>,
    created_id: &str,
    desired: &Desired,
) -> (&'static str, String) {
    if gone {
        (
            "WebhookRecreated",
            format!(
                "webhook {} was deleted in App Store Connect; created {}",
                recorded.unwrap_or_default(),
                created_id
            ),
        )
    } else {
        (
            "WebhookCreated",
            format!(
                "created App Store Connect webhook {} for app {}",
                created_id, desired.app_id
            ),
        )
    }
}

/// Sends a planned change (with the secret when the plan says so) and returns the note for status and
/// the Event; apart from [`sync`] to keep each plan arm short.
async fn update(
    hooks: &Webhooks<'_>,
    id: &str,
    mut change: WebhookChange,
    send_secret: bool,
    adopted: bool,
    secret: &WebhookSecret,
) -> Result<String, WebhookError> {
    if send_secret {
        change.secret = Some(secret.expose().to_owned());
    }
    let fields = change.fields().join(", ");
    hooks.update(id, &change).await?;
    Ok(if adopted {
        format!(
            "adopted the existing App Store Connect webhook {id} with this route's URL; updated {fields}"
        )
    } else {
        format!("updated {fields} of App Store Connect webhook {id}")
    })
}
