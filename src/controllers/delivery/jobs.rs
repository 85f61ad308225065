//! Job actions: create the rule's Job once, and follow it to its end.
//!
//! The Job's name is derived from route, rule and event, so a second create is AlreadyExists; that Job is
//! adopted only when this delivery owns it (a Job of that name made by anyone else is not ours to
//! report on). What the Job watch last showed of each managed Job is kept in memory, so a Job that
//! finished and was then removed by `ttlSecondsAfterFinished` still counts as finished, not as lost.

use super::create::{ActionInput, Created, Reasons, create_once};
use super::state::{self, Why};
use crate::actions::job::{self, ApiKeyEnv};
use crate::controllers::Error;
use crate::controllers::context::{Context, JobFact, job_facts::fact_of};
use crate::controllers::impersonation::{self, Identity};
use crate::metrics::ActionLabels;
use crate::resources::delivery::{ActionState, ActionStatus};
use crate::resources::route::JobAction;
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::time::Instant;

/// How long a Job missing from the API server may still have its deletion (and last state) on the way
/// in the Job watch before it counts as deleted unfinished. The watch usually brings it within a second;
/// without a watch event (the deletion fell into a watch restart) the Job recheck concludes it later.
const DELETION_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long what the Job watch showed of an unfinished Job stands in for reading it: under the slow
/// recheck, so that recheck reads.
const WATCH_TRUSTED: std::time::Duration = std::time::Duration::from_secs(120);

/// What a pass concludes about a Job the API server no longer has.
fn missing(fact: Option<&JobFact>, missing_for: std::time::Duration) -> Option<JobFact> {
    match fact {
        Some(f) if f.state.is_done() => Some(f.clone()),
        Some(f) if f.deleted => None,
        // Removed by its TTL a moment ago, with its last state still in the lagging watch: wait for it.
        _ if missing_for < DELETION_IN_FLIGHT => Some(JobFact {
            state: ActionState::Running,
            why: None,
            deleted: false,
        }),
        _ => None,
    }
}

/// Everything a Job action is made from.
pub type JobInput<'a> = ActionInput<'a, JobAction>;

/// Advances a Job action one step.
pub async fn step(
    ctx: &Context,
    input: &JobInput<'_>,
    a: &mut ActionStatus,
    now: &str,
) -> Result<JobStep, Error> {
    let JobInput {
        delivery: d,
        route,
        action,
        ..
    } = *input;
    let namespace = d.namespace().unwrap_or_default();
    if let Some(name) = a.job_name.clone() {
        observe(ctx, &namespace, &name, a, now).await?;
        return Ok(JobStep::Observed);
    }
    let job = match api_key_for(ctx, &namespace, route, action).await? {
        Ok(api_key) => build(input, api_key.as_ref(), a),
        Err(why) => Err(why),
    };
    let job = match job {
        Ok(job) => job,
        Err(why) => {
            state::transition(a, ActionState::Failed, Some(why), now);
            return Ok(JobStep::Observed);
        }
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    a.attempts += 1;
    let started = Instant::now();
    match create(ctx, d, route, &namespace, &job).await? {
        Created::Ours { new } => {
            ctx.metrics
                .action_duration
                .get_or_create(&ActionLabels {
                    kind: "job",
                    outcome: "created",
                })
                .observe(started.elapsed().as_secs_f64());
            a.job_name = Some(name.clone());
            state::transition(a, ActionState::Running, None, now);
            // No Event: a Job per delivery is the normal case, and an Event per delivery is a write per
            // delivery that nobody has to act on (the delivery's status and the metric say it).
            if new {
                ctx.metrics
                    .actions
                    .get_or_create(&ActionLabels {
                        kind: "job",
                        outcome: "created",
                    })
                    .inc();
            }
            Ok(JobStep::Created)
        }
        Created::Refused(why) => {
            state::transition(a, ActionState::Failed, Some(why), now);
            Ok(JobStep::Observed)
        }
        Created::Later(why) => Ok(JobStep::RetryLater(why)),
    }
}

/// The API key the Job's environment gets, if the action asks for one and the route may mount it.
async fn api_key_for(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
    action: &JobAction,
) -> Result<Result<Option<ApiKeyEnv>, Why>, Error> {
    if !action.inject_api_key {
        return Ok(Ok(None));
    }
    Ok(match api_key_env(ctx, namespace, route).await? {
        Ok(k) => may_mount_key(ctx, namespace, route, &k)
            .await?
            .map(|()| Some(k)),
        Err(why) => Err(why),
    })
}

/// The Job of the action, or why its template does not make one.
fn build(
    input: &JobInput<'_>,
    api_key: Option<&ApiKeyEnv>,
    a: &mut ActionStatus,
) -> Result<Job, Why> {
    let JobInput {
        rule,
        action,
        event,
        ..
    } = *input;
    match job::build_job_reporting(&rule.name, &action.template, event, api_key) {
        Ok(built) => {
            // Linux refuses a single environment string over 128 KiB: such values are replaced by a marker,
            // and the status says which.
            a.omitted_env = built.omitted_env.iter().map(|v| (*v).to_owned()).collect();
            Ok(built.job)
        }
        Err(e) => Err(Why::new("InvalidJobTemplate", e.to_string())),
    }
}

/// What one step of a Job action did.
pub enum JobStep {
    /// A Job now exists for the action: record it before anything else.
    Created,
    /// Looked at the Job (or failed the action); nothing new exists.
    Observed,
    /// Creation was refused for now; retry after a backoff.
    RetryLater(Why),
}

async fn create(
    ctx: &Context,
    d: &WebhookDelivery,
    route: &WebhookRoute,
    namespace: &str,
    job: &Job,
) -> Result<Created, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    // Created as the route's ServiceAccount: a route creates only the Jobs that account may create.
    let acting: Api<Job> = match ctx.action_client(route) {
        Ok(client) => Api::namespaced(client, namespace),
        Err(e) => {
            return Ok(Created::Refused(Why::new(
                "ImpersonationFailed",
                e.to_string(),
            )));
        }
    };
    let reasons = Reasons {
        what: "Job".to_owned(),
        name_taken: "JobNameTaken",
        refused: "JobRefused",
        gone: None,
    };
    let uid = d.uid();
    create_once(&acting, &jobs, job, uid.as_deref(), &reasons)
        .await
        .map_err(Error::Kube)
}

/// Reads what became of the action's Job: from the watch's memory, else from the API server.
async fn observe(
    ctx: &Context,
    namespace: &str,
    name: &str,
    a: &mut ActionStatus,
    now: &str,
) -> Result<(), Error> {
    let seen = ctx.job_facts.get_with_age(namespace, name);
    let remembered = seen.as_ref().map(|(f, _)| f.clone());
    let fact = match seen {
        Some((f, _)) if f.state.is_done() => Some(f),
        // Deleted unfinished: a read would find nothing either.
        Some((f, _)) if f.deleted => None,
        // The watch shows every change of the Job, and each wakes this delivery: what it showed lately is
        // what a read would say, without the read (a quorum read through etcd on a real API server). The
        // slow recheck still reads, for a deletion that fell into a watch restart.
        Some((f, age)) if age < WATCH_TRUSTED => Some(f),
        _ => {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
            // None: gone, finished and removed by its TTL (remembered above) or deleted while running.
            match jobs.get_opt(name).await.map_err(Error::Kube)? {
                Some(job) => Some(fact_of(&job, false)),
                None => missing(
                    remembered.as_ref(),
                    ctx.job_facts.missing_for(namespace, name),
                ),
            }
        }
    };
    let (s, why) = match fact {
        Some(f) => (f.state, f.why),
        None => (
            ActionState::Failed,
            Some(Why::new(
                "JobDeleted",
                format!("Job {name} was deleted before it was seen to finish"),
            )),
        ),
    };
    if s != a.state && s.is_done() {
        let outcome = if s == ActionState::Succeeded {
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
    state::transition(a, s, why, now);
    Ok(())
}

/// A pod may mount any Secret of its namespace, so the API key goes into a Job only if the route's
/// ServiceAccount may read that Secret itself (the operator's own identity needs no check). Only
/// metadata is fetched; a missing Secret is left to the pod to report.
async fn may_mount_key(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
    key: &ApiKeyEnv,
) -> Result<Result<(), Why>, Error> {
    if ctx.action_identity(route) == Identity::Operator {
        return Ok(Ok(()));
    }
    let client = match ctx.action_client(route) {
        Ok(c) => c,
        Err(e) => return Ok(Err(Why::new("ImpersonationFailed", e.to_string()))),
    };
    match Api::<Secret>::namespaced(client, namespace)
        .get_metadata_opt(&key.private_key.name)
        .await
    {
        Ok(_) => Ok(Ok(())),
        Err(e) => match impersonation::refusal(&e) {
            Some(refused) => Ok(Err(Why::new("Forbidden", refused))),
            None => Err(Error::Kube(e)),
        },
    }
}

/// The credential's key by reference, for `injectApiKey`. The outer error is the API server's; the
/// inner one a configuration problem that fails the action.
async fn api_key_env(
    ctx: &Context,
    namespace: &str,
    route: &WebhookRoute,
) -> Result<Result<ApiKeyEnv, Why>, Error> {
    let Some(cref) = &route.spec.credential_ref else {
        return Ok(Err(Why::new(
            "CredentialRequired",
            "job.injectApiKey needs the route's credentialRef",
        )));
    };
    let creds: Api<AscCredential> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(
        match creds.get_opt(&cref.name).await.map_err(Error::Kube)? {
            None => Err(Why::new(
                "CredentialNotFound",
                format!("AscCredential {namespace}/{} does not exist", cref.name),
            )),
            Some(c) => Ok(ApiKeyEnv {
                key_id: c.spec.key_id.clone(),
                issuer_id: c.spec.issuer_id.clone(),
                private_key: c.spec.private_key_secret_ref.clone(),
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fact(state: ActionState, deleted: bool) -> JobFact {
        JobFact {
            state,
            why: None,
            deleted,
        }
    }

    #[test]
    fn a_missing_job_the_watch_saw_finish_keeps_its_outcome() {
        let done = fact(ActionState::Succeeded, true);
        assert_eq!(missing(Some(&done), Duration::ZERO), Some(done));
    }

    #[test]
    fn a_missing_job_the_watch_saw_deleted_unfinished_is_gone_at_once() {
        let deleted = fact(ActionState::Running, true);
        assert_eq!(missing(Some(&deleted), Duration::ZERO), None);
    }

    #[test]
    fn a_missing_job_whose_deletion_the_watch_has_not_shown_waits_for_it_then_counts_as_gone() {
        let running = fact(ActionState::Running, false);
        for seen in [None, Some(&running)] {
            let waiting = missing(seen, Duration::from_secs(1));
            assert_eq!(waiting.map(|f| f.state), Some(ActionState::Running));
            assert_eq!(missing(seen, DELETION_IN_FLIGHT), None);
        }
    }
}
