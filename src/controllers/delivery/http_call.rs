//! HTTP actions: the request is built from the route's Secrets and the event; sending it is one attempt.
//! The delivery controller records the attempt (`InFlight`) before calling [`send`], and its outcome right
//! after.

use super::state::Why;
use crate::actions::EventContext;
use crate::actions::http::{self, AttemptOutcome, PreparedRequest};
use crate::controllers::Error;
use crate::controllers::context::Context;
use crate::controllers::impersonation;
use crate::metrics::ActionLabels;
use crate::resources::WebhookRoute;
use crate::resources::route::HttpAction;
use std::collections::BTreeMap;
use std::time::Instant;

/// Whether a request can be sent now.
pub enum Prepared {
    /// Ready to send.
    Request(Box<PreparedRequest>),
    /// Something it needs is missing, perhaps only for now (a Secret being created): counts as a
    /// failed attempt, retried.
    Missing(String),
    /// It can never be sent as configured (the template does not render): the action fails.
    Invalid(Why),
}

/// Reads the URL and header Secrets — as the route's ServiceAccount, so a route sends only what that
/// account may read — and renders the request.
pub async fn prepare(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
    action: &HttpAction,
    event_ctx: &EventContext<'_>,
) -> Result<Prepared, Error> {
    let client = match ctx.action_client(route) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Prepared::Invalid(Why::new(
                "ImpersonationFailed",
                e.to_string(),
            )));
        }
    };
    let url_ref = &action.url_secret_ref;
    let url = match impersonation::read_secret(client.clone(), namespace, &url_ref.name)
        .await
        .map_err(Error::Kube)?
    {
        Ok(s) => s,
        Err(refused) => return Ok(Prepared::Invalid(Why::new("Forbidden", refused))),
    };
    let url = url
        .and_then(|s| s.data.and_then(|mut d| d.remove(&url_ref.key)))
        .and_then(|b| String::from_utf8(b.0).ok());
    let Some(url) = url else {
        return Ok(Prepared::Missing(format!(
            "Secret {namespace}/{} has no key {:?} with the URL",
            url_ref.name, url_ref.key
        )));
    };
    let mut headers = BTreeMap::new();
    if let Some(h) = &action.headers_secret_ref {
        let secret = match impersonation::read_secret(client, namespace, &h.name)
            .await
            .map_err(Error::Kube)?
        {
            Ok(s) => s,
            Err(refused) => return Ok(Prepared::Invalid(Why::new("Forbidden", refused))),
        };
        match secret {
            Some(secret) => {
                for (k, v) in secret.data.unwrap_or_default() {
                    headers.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
            }
            // Sending without the Authorization header would only earn a 401 (or worse, succeed
            // somewhere it should not): wait for the Secret.
            None => {
                return Ok(Prepared::Missing(format!(
                    "Secret {namespace}/{} with the headers does not exist",
                    h.name
                )));
            }
        }
    }
    Ok(match http::prepare(action, &url, &headers, event_ctx) {
        Ok(r) => Prepared::Request(Box::new(r)),
        Err(e) => Prepared::Invalid(Why::new("InvalidHttpTemplate", e.to_string())),
    })
}

/// Sends one attempt and counts it.
pub async fn send(ctx: &Context, request: &PreparedRequest) -> AttemptOutcome {
    let started = Instant::now();
    let outcome = http::send(&ctx.http, request).await;
    let label = match &outcome {
        AttemptOutcome::Succeeded { .. } => "succeeded",
        AttemptOutcome::Retryable { .. } => "retry",
        AttemptOutcome::Permanent { .. } | AttemptOutcome::Denied { .. } => "failed",
    };
    ctx.metrics
        .action_duration
        .get_or_create(&ActionLabels {
            kind: "http",
            outcome: label,
        })
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .actions
        .get_or_create(&ActionLabels {
            kind: "http",
            outcome: label,
        })
        .inc();
    outcome
}
