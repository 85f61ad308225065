//! The `WebhookDelivery` controller: match the route's rules, enrich once, run each action exactly once,
//! and keep the delivery's status true.
//!
//! Exactly once rests on two things: Jobs have deterministic names (a second create is AlreadyExists,
//! treated as success), and progress is recorded in status right after each step, so a restarted
//! operator resumes where the last one stopped. HTTP calls are at-least-once by nature (a crash between
//! the call and the status write repeats it); every attempt is recorded.

use super::context::{Context, CredentialProblem};
use super::delivery_state::{self as ds, state};
use super::impersonation;
use super::matching::{EventFacts, matching_rules};
use super::{Error, credential::error_chain, status};
use crate::actions::EventContext;
use crate::actions::http::{self, AttemptOutcome};
use crate::actions::job::{self, ApiKeyEnv};
use crate::asc::enrich::Enrichment;
use crate::metrics::ActionLabels;
use crate::receiver::record::LABEL_FINISHED;
use crate::resources::delivery::{EnrichmentStatus, Phase, WebhookDeliveryStatus};
use crate::resources::route::{EnrichPolicy, HttpAction, JobAction, Rule};
use crate::resources::{AscCredential, FIELD_MANAGER, WebhookDelivery, WebhookRoute};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running Job is looked at this often even without a watch event, as a safety net.
const JOB_RECHECK: Duration = Duration::from_secs(300);

/// What one pass learned about enrichment.
enum Enriched {
    NotNeeded,
    Yes(Enrichment),
    No { message: String, transient: bool },
}

/// Reconciles one delivery.
pub async fn reconcile(d: Arc<WebhookDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let previous = d.status.clone().unwrap_or_default();
    if previous.phase.is_terminal() {
        // A crash between the terminal status and the label leaves the label to set now.
        if !d.labels().contains_key(LABEL_FINISHED) {
            mark_finished(&ctx, &d).await?;
        }
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let now_ts = jiff::Timestamp::now();
    let now = crate::time::format_ts(now_ts);
    let mut st = previous.clone();
    let generation = d.metadata.generation;

    let routes: Api<WebhookRoute> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(route) = routes.get_opt(&d.spec.route).await.map_err(Error::Kube)? else {
        ds::finish(
            &mut st,
            Phase::Failed,
            Some(format!("route {} no longer exists", d.spec.route)),
            generation,
            &now,
        );
        return write(&ctx, &d, &previous, st).await;
    };

    let facts = EventFacts {
        event_type: &d.spec.event_type,
        new_state: d.spec.new_state.as_deref(),
        old_state: d.spec.old_state.as_deref(),
    };
    // Rules matched on the first pass stay the plan, so editing a route never half-reruns an event.
    let rules: Vec<Rule> = if st.matched_rules.is_empty() {
        matching_rules(&route.spec.rules, facts)
            .into_iter()
            .cloned()
            .collect()
    } else {
        route
            .spec
            .rules
            .iter()
            .filter(|r| st.matched_rules.contains(&r.name))
            .cloned()
            .collect()
    };
    if rules.is_empty() && st.matched_rules.is_empty() {
        ds::finish(&mut st, Phase::NoMatch, None, generation, &now);
        return write(&ctx, &d, &previous, st).await;
    }
    for gone in st
        .matched_rules
        .clone()
        .iter()
        .filter(|n| !rules.iter().any(|r| &r.name == *n))
    {
        if let Some(a) = st
            .actions
            .iter_mut()
            .find(|a| &a.rule == gone && !ds::is_done(a))
        {
            ds::transition(
                a,
                state::FAILED,
                Some("the rule was removed from the route".into()),
                &now,
            );
        }
    }
    st.matched_rules = rules.iter().map(|r| r.name.clone()).collect();

    let retry_due = st
        .next_retry_time
        .as_deref()
        .and_then(crate::time::parse_ts)
        .is_none_or(|t| t <= now_ts);
    let enriched = enrich_if_needed(&ctx, &d, &route, &rules, &st, retry_due).await;
    let mut did_work = !matches!(enriched, Enriched::NotNeeded);
    match &enriched {
        Enriched::Yes(e) => st.enrichment = Some(summary(e)),
        Enriched::No { message, .. } => {
            st.enrichment = Some(EnrichmentStatus {
                result: "Failed".into(),
                message: Some(message.clone()),
                ..Default::default()
            })
        }
        Enriched::NotNeeded => {}
    }
    let enrichment = match &enriched {
        Enriched::Yes(e) => Some(e),
        _ => None,
    };
    let event_ctx = EventContext {
        delivery: &d,
        enrichment,
    };

    let mut retry_in: Option<Duration> = None;
    let attempts_so_far = st.attempts;
    for rule in &rules {
        let a = ds::entry(&mut st.actions, rule);
        if ds::is_done(a) {
            continue;
        }
        let starting = a.job_name.is_none() && rule.job.is_some() || rule.http.is_some();
        if starting && rule.enrich == EnrichPolicy::Required && enrichment.is_none() {
            match &enriched {
                Enriched::No {
                    message,
                    transient: true,
                } if attempts_so_far + 1 < ctx.settings.max_attempts => {
                    ds::transition(
                        a,
                        state::PENDING,
                        Some(format!("enrichment failed, will retry: {message}")),
                        &now,
                    );
                    retry_in = Some(
                        ctx.settings
                            .backoff(u32::try_from(attempts_so_far + 1).unwrap_or(1)),
                    );
                }
                Enriched::No { message, .. } => ds::transition(
                    a,
                    state::FAILED,
                    Some(format!("enrichment is required but failed: {message}")),
                    &now,
                ),
                // Waiting for a scheduled retry.
                _ if !retry_due => {}
                // Nothing could be fetched at all: no credential, or an event without an object.
                _ => {
                    let why = if route.spec.credential_ref.is_none() {
                        "enrichment is required but the route has no credentialRef"
                    } else {
                        "enrichment is required but the event names no App Store Connect object to fetch"
                    };
                    ds::transition(a, state::FAILED, Some(why.into()), &now)
                }
            }
            continue;
        }
        if let Some(job_action) = &rule.job {
            did_work |= run_job(
                &ctx, &d, &namespace, &route, rule, job_action, &event_ctx, a, &now,
            )
            .await?;
        } else if let Some(http_action) = &rule.http {
            if !retry_due {
                continue;
            }
            did_work = true;
            if let Some(hint) =
                run_http(&ctx, &namespace, &route, http_action, &event_ctx, a, &now).await?
            {
                let backoff = ctx.settings.backoff(u32::try_from(a.attempts).unwrap_or(1));
                let wanted = hint
                    .map_or(backoff, |s| Duration::from_secs(s).max(backoff))
                    .min(ctx.settings.retry_max_delay);
                retry_in = Some(retry_in.map_or(wanted, |r| r.min(wanted)));
            }
        }
    }
    if did_work {
        st.attempts += 1;
    }

    let mut phase = ds::phase_of(&st.actions);
    if !phase.is_terminal() && retry_in.is_none() && !retry_due {
        // Nothing ran because a retry is not due yet: keep the schedule.
    } else {
        st.next_retry_time = retry_in.map(|r| crate::time::format_ts(now_ts + r));
    }
    if phase == Phase::Pending && st.attempts > 0 {
        phase = Phase::Running;
    }
    let message = if phase == Phase::Failed {
        ds::failure_message(&st.actions)
    } else {
        None
    };
    ds::finish(&mut st, phase, message, generation, &now);

    let action = next_action(&st, now_ts);
    write(&ctx, &d, &previous, st).await?;
    Ok(action)
}

fn next_action(st: &WebhookDeliveryStatus, now: jiff::Timestamp) -> Action {
    if st.phase.is_terminal() {
        return Action::await_change();
    }
    if let Some(t) = st
        .next_retry_time
        .as_deref()
        .and_then(crate::time::parse_ts)
    {
        let wait = t.duration_since(now).as_millis().max(0) as u64;
        return Action::requeue(Duration::from_millis(wait.max(10)).min(JOB_RECHECK));
    }
    Action::requeue(JOB_RECHECK)
}

async fn write(
    ctx: &Context,
    d: &WebhookDelivery,
    previous: &WebhookDeliveryStatus,
    st: WebhookDeliveryStatus,
) -> Result<Action, Error> {
    if &st == previous {
        return Ok(next_action(&st, jiff::Timestamp::now()));
    }
    let api: Api<WebhookDelivery> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    status::apply(&api, &d.name_any(), &st)
        .await
        .map_err(Error::Kube)?;
    if st.phase == Phase::Failed && previous.phase != Phase::Failed {
        let why = st
            .message
            .clone()
            .unwrap_or_else(|| "an action failed".into());
        ctx.event(d, true, "DeliveryFailed", why).await;
    }
    if st.phase.is_terminal() {
        mark_finished(ctx, d).await?;
    }
    Ok(next_action(&st, jiff::Timestamp::now()))
}

/// Labels a finished delivery, which drops it from this controller's watch (and memory).
async fn mark_finished(ctx: &Context, d: &WebhookDelivery) -> Result<(), Error> {
    let api: Api<WebhookDelivery> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1",
        "kind": "WebhookDelivery",
        "metadata": {"labels": {LABEL_FINISHED: "true"}},
    });
    match api
        .patch(
            &d.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(Error::Kube(e)),
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

/// Fetches the event's object once per pass when an action that is about to start may use it.
async fn enrich_if_needed(
    ctx: &Context,
    d: &WebhookDelivery,
    route: &WebhookRoute,
    rules: &[Rule],
    st: &WebhookDeliveryStatus,
    retry_due: bool,
) -> Enriched {
    let wants = rules.iter().any(|r| {
        let a = st.actions.iter().find(|a| a.rule == r.name);
        let pending =
            a.is_none_or(|a| !ds::is_done(a) && (r.http.is_some() || a.job_name.is_none()));
        pending && r.enrich != EnrichPolicy::Never
    });
    let (Some(cred), Some(url)) = (
        &route.spec.credential_ref,
        d.spec.instance.as_ref().and_then(|i| i.url.as_ref()),
    ) else {
        return Enriched::NotNeeded;
    };
    if !wants || !retry_due {
        return Enriched::NotNeeded;
    }
    if let Some(e) = ctx.cached_enrichment(d) {
        return Enriched::Yes(e);
    }
    let namespace = d.namespace().unwrap_or_default();
    let resolved = match ctx.asc_client(&namespace, &cred.name).await {
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
    let result = resolved.client.fetch_instance(url).await;
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
                ctx.cache_enrichment(d, &e);
                Enriched::Yes(e)
            }
            Err(e) => Enriched::No {
                message: e.to_string(),
                transient: false,
            },
        },
        Err(e) => {
            use crate::asc::api::ApiError;
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

#[allow(clippy::too_many_arguments)]
async fn run_job(
    ctx: &Context,
    d: &WebhookDelivery,
    namespace: &str,
    route: &WebhookRoute,
    rule: &Rule,
    action: &JobAction,
    event_ctx: &EventContext<'_>,
    a: &mut crate::resources::delivery::ActionStatus,
    now: &str,
) -> Result<bool, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(name) = a.job_name.clone() {
        match jobs.get_opt(&name).await.map_err(Error::Kube)? {
            Some(job) => {
                let (s, why) = ds::job_outcome(&job);
                if s != a.state.as_str() && s != state::RUNNING {
                    let outcome = if s == state::SUCCEEDED {
                        "succeeded"
                    } else {
                        "failed"
                    };
                    ctx.metrics
                        .actions
                        .get_or_create(&ActionLabels {
                            kind: "job",
                            outcome,
                        })
                        .inc();
                }
                ds::transition(a, s, why, now);
            }
            None => ds::transition(
                a,
                state::FAILED,
                Some(format!("Job {name} was deleted before it finished")),
                now,
            ),
        }
        return Ok(false);
    }
    let api_key = if action.inject_api_key {
        match api_key_env(ctx, namespace, route).await? {
            Ok(k) => match may_mount_key(ctx, namespace, route, &k).await? {
                Ok(()) => Some(k),
                Err(why) => {
                    ds::transition(a, state::FAILED, Some(why), now);
                    return Ok(false);
                }
            },
            Err(why) => {
                ds::transition(a, state::FAILED, Some(why), now);
                return Ok(false);
            }
        }
    } else {
        None
    };
    let job = match job::build_job(&rule.name, &action.template, event_ctx, api_key.as_ref()) {
        Ok(j) => j,
        Err(e) => {
            ds::transition(
                a,
                state::FAILED,
                Some(format!("InvalidJobTemplate: {e}")),
                now,
            );
            return Ok(false);
        }
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    a.attempts += 1;
    // Created as the route's ServiceAccount: a route creates only the Jobs that account may create.
    let acting: Api<Job> = match ctx.action_client(route) {
        Ok(client) => Api::namespaced(client, namespace),
        Err(e) => {
            ds::transition(
                a,
                state::FAILED,
                Some(format!("ImpersonationFailed: {e}")),
                now,
            );
            return Ok(true);
        }
    };
    let created = match acting.create(&params, &job).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.is_already_exists() => false,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            ds::transition(a, state::FAILED, Some(impersonation::forbidden(&s)), now);
            return Ok(true);
        }
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
            ds::transition(
                a,
                state::FAILED,
                Some(format!("the API server refused Job {name}: {}", s.message)),
                now,
            );
            return Ok(true);
        }
        Err(e) => return Err(Error::Kube(e)),
    };
    ctx.metrics
        .action_duration
        .get_or_create(&ActionLabels {
            kind: "job",
            outcome: "created",
        })
        .observe(started.elapsed().as_secs_f64());
    a.job_name = Some(name.clone());
    ds::transition(a, state::RUNNING, None, now);
    if created {
        ctx.metrics
            .actions
            .get_or_create(&ActionLabels {
                kind: "job",
                outcome: "created",
            })
            .inc();
        ctx.event(
            d,
            false,
            "JobCreated",
            format!("rule {} created Job {name}", rule.name),
        )
        .await;
    }
    Ok(true)
}

/// The credential's key by reference, for `injectApiKey`. The outer error is the API server's; the
/// inner one a configuration problem that fails the action.
async fn api_key_env(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
) -> Result<Result<ApiKeyEnv, String>, Error> {
    let Some(cref) = &route.spec.credential_ref else {
        return Ok(Err(
            "job.injectApiKey needs the route's credentialRef".into()
        ));
    };
    let creds: Api<AscCredential> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(
        match creds.get_opt(&cref.name).await.map_err(Error::Kube)? {
            None => Err(format!(
                "AscCredential {namespace}/{} does not exist",
                cref.name
            )),
            Some(c) => Ok(ApiKeyEnv {
                key_id: c.spec.key_id.clone(),
                issuer_id: c.spec.issuer_id.clone(),
                private_key: c.spec.private_key_secret_ref.clone(),
            }),
        },
    )
}

/// A pod may mount any Secret of its namespace, so the API key goes into a Job only if the route's
/// ServiceAccount may read it itself (the operator's own identity needs no check).
async fn may_mount_key(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
    key: &ApiKeyEnv,
) -> Result<Result<(), String>, Error> {
    if ctx.action_identity(route) == impersonation::Identity::Operator {
        return Ok(Ok(()));
    }
    match ctx.action_client(route) {
        Ok(client) => impersonation::may_read_secret(client, namespace, &key.private_key.name)
            .await
            .map_err(Error::Kube),
        Err(e) => Ok(Err(format!("ImpersonationFailed: {e}"))),
    }
}

/// One HTTP attempt. Returns `Some(retry_after)` when another attempt is due.
async fn run_http(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
    action: &HttpAction,
    event_ctx: &EventContext<'_>,
    a: &mut crate::resources::delivery::ActionStatus,
    now: &str,
) -> Result<Option<Option<u64>>, Error> {
    let max = http::max_attempts(action);
    let url_ref = &action.url_secret_ref;
    // The Secrets are read as the route's ServiceAccount: a route sends only what that account may read.
    let found = match ctx.action_client(route) {
        Ok(client) => impersonation::http_secrets(client, namespace, action)
            .await
            .map_err(Error::Kube)?,
        Err(e) => Err(format!("ImpersonationFailed: {e}")),
    };
    let (url, headers) = match found {
        Ok(found) => found,
        Err(why) => {
            a.attempts += 1;
            ds::transition(a, state::FAILED, Some(why), now);
            return Ok(None);
        }
    };
    let Some(url) = url else {
        let outcome = AttemptOutcome::Retryable {
            status: None,
            error: format!(
                "Secret {namespace}/{} has no key {:?} with the URL",
                url_ref.name, url_ref.key
            ),
            retry_after: None,
        };
        return Ok(ds::record_http_attempt(a, &outcome, max, now));
    };
    let request = match http::prepare(action, &url, &headers, event_ctx) {
        Ok(r) => r,
        Err(e) => {
            a.attempts += 1;
            ds::transition(a, state::FAILED, Some(e.to_string()), now);
            return Ok(None);
        }
    };
    let started = Instant::now();
    let outcome = http::send(&ctx.http, &request).await;
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
    let next = ds::record_http_attempt(a, &outcome, max, now);
    let final_label = match a.state.as_str() {
        state::SUCCEEDED => "succeeded",
        state::FAILED => "failed",
        _ => "retry",
    };
    ctx.metrics
        .actions
        .get_or_create(&ActionLabels {
            kind: "http",
            outcome: final_label,
        })
        .inc();
    Ok(next)
}
