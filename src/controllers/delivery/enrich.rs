//! Enrichment for the delivery controller: fetch the event's object from App Store Connect at most once
//! per pass, and only when an action about to start may use it.

use super::state;
use crate::asc::api::ApiError;
use crate::asc::enrich::Enrichment;
use crate::controllers::context::{Context, CredentialProblem};
use crate::metrics::ActionLabels;
use crate::resources::delivery::{EnrichmentStatus, WebhookDeliveryStatus};
use crate::resources::route::{EnrichPolicy, Rule};
use crate::resources::{WebhookDelivery, WebhookRoute};
use crate::text::error_chain;
use kube::ResourceExt;
use std::time::Instant;

/// What one pass learned about enrichment.
// One value per delivery pass, never stored in bulk: boxing the enrichment would save nothing that counts.
#[allow(clippy::large_enum_variant)]
pub enum Enriched {
    /// No action about to start wants it, or there is nothing to fetch.
    NotNeeded,
    /// Fetched (or remembered from an earlier pass).
    Yes(Enrichment),
    /// The API could not give it.
    No {
        /// Why, for a person.
        message: String,
        /// Whether a later attempt may succeed.
        transient: bool,
    },
}

impl Enriched {
    /// The enrichment, when there is one.
    pub fn get(&self) -> Option<&Enrichment> {
        match self {
            Enriched::Yes(e) => Some(e),
            _ => None,
        }
    }

    /// The summary kept in status, when this pass has something to say.
    pub fn status(&self) -> Option<EnrichmentStatus> {
        match self {
            Enriched::Yes(e) => Some(summary(e)),
            Enriched::No { message, .. } => Some(EnrichmentStatus {
                result: "Failed".into(),
                message: Some(message.clone()),
                ..Default::default()
            }),
            Enriched::NotNeeded => None,
        }
    }
}

fn summary(e: &Enrichment) -> EnrichmentStatus {
    EnrichmentStatus {
        result: "Enriched".into(),
        version: e.version.clone(),
        build_number: e.build_number.clone(),
        platform: e.platform.clone(),
        state: e.state.clone(),
        errors: e.errors.iter().map(|i| i.render()).collect(),
        message: None,
    }
}

/// Whether an action of `rules` that has not started yet may use enrichment.
fn wanted(rules: &[Rule], st: &WebhookDeliveryStatus) -> bool {
    rules.iter().any(|r| {
        let a = st.actions.iter().find(|a| a.rule == r.name);
        // A created Job or object needs nothing more from App Store Connect.
        let pending = a.is_none_or(|a| {
            !a.state.is_done()
                && (r.http.is_some() || (a.job_name.is_none() && a.resource.is_none()))
        });
        pending && r.enrich != EnrichPolicy::Never
    })
}

/// Fetches the event's object when an action about to start may use it.
pub async fn enrich_if_needed(
    ctx: &Context,
    d: &WebhookDelivery,
    route: &WebhookRoute,
    rules: &[Rule],
    st: &WebhookDeliveryStatus,
    retry_due: bool,
) -> Enriched {
    let (Some(cred), Some(instance)) = (&route.spec.credential_ref, d.spec.instance.as_ref())
    else {
        return Enriched::NotNeeded;
    };
    if !wanted(rules, st) || !retry_due {
        return Enriched::NotNeeded;
    }
    if let Some(e) = ctx.enrichments.get(d) {
        return Enriched::Yes(e);
    }
    let namespace = d.namespace().unwrap_or_default();
    let resolved = match ctx.asc_clients.resolve(&namespace, &cred.name).await {
        Ok(r) => r,
        Err(CredentialProblem::Unusable {
            reason,
            message,
            transient,
        }) => {
            return Enriched::No {
                message: format!("{reason}: {message}"),
                transient,
            };
        }
    };
    let started = Instant::now();
    let result = resolved
        .client
        .fetch_instance_of(&instance.type_, &instance.id, instance.url.as_deref())
        .await;
    ctx.metrics
        .action_duration
        .get_or_create(&ActionLabels {
            kind: "enrich",
            outcome: if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            },
        })
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(doc) => match Enrichment::from_document(&doc) {
            Ok(e) => {
                ctx.enrichments.remember(d, &e);
                Enriched::Yes(e)
            }
            Err(e) => Enriched::No {
                message: e.to_string(),
                transient: false,
            },
        },
        Err(e) => {
            let transient = matches!(
                e,
                ApiError::GaveUp { .. }
                    | ApiError::Transport { .. }
                    | ApiError::Status { .. }
                    | ApiError::Token(_)
            );
            Enriched::No {
                message: error_chain(&e),
                transient,
            }
        }
    }
}

/// What a rule that requires enrichment does when there is none: wait for a retry, or fail.
pub enum RequiredMissing {
    /// Try again after a backoff.
    Retry(state::Why),
    /// Fail the action.
    Fail(state::Why),
    /// A retry is scheduled and not due: leave the action as it is.
    Wait,
}

/// The decision for a rule with `enrich: Required` when this pass has no enrichment.
pub fn required_missing(
    enriched: &Enriched,
    retry_due: bool,
    attempts_so_far: i32,
    max_attempts: i32,
    has_credential: bool,
) -> RequiredMissing {
    match enriched {
        Enriched::No {
            message,
            transient: true,
        } if attempts_so_far + 1 < max_attempts => RequiredMissing::Retry(state::Why::new(
            "EnrichmentFailed",
            format!("enrichment failed, will retry: {message}"),
        )),
        Enriched::No { message, .. } => RequiredMissing::Fail(state::Why::new(
            "EnrichmentFailed",
            format!("enrichment is required but failed: {message}"),
        )),
        _ if !retry_due => RequiredMissing::Wait,
        // Nothing could be fetched at all: no credential, or an event without an object.
        _ if !has_credential => RequiredMissing::Fail(state::Why::new(
            "CredentialRequired",
            "enrichment is required but the route has no credentialRef",
        )),
        _ => RequiredMissing::Fail(state::Why::new(
            "NothingToEnrich",
            "enrichment is required but the event names no App Store Connect object to fetch",
        )),
    }
}
