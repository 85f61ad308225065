//! Resource actions: create the rule's object (any namespaced kind) once, and follow it to its end.
//!
//! As with Jobs, the name is derived from route, rule and event, so a second create is AlreadyExists, and
//! that object is adopted only when this delivery owns it. The object is created as the route's
//! ServiceAccount; it is read back with the operator's own rights. Its kind's metadata watch wakes this
//! delivery whenever the object changes; each wake reads the object once and decides with
//! `succeededWhen`/`failedWhen` or the common conventions (`actions::resource`).

use super::create::{ActionInput, Created, Reasons, create_once};
use super::jobs::JobStep;
use super::state::{self, Why};
use crate::actions::resource::{self, Outcome, TypeRef};
use crate::actions::when::COST_LIMIT;
use crate::controllers::Error;
use crate::controllers::context::Context;
use crate::controllers::resource_kinds::KindFact;
use crate::metrics::ActionLabels;
use crate::resources::delivery::{ActionState, ActionStatus, ResourceStatus};
use crate::resources::route::ResourceAction;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, ResourceExt};
use std::time::Instant;

/// Everything a resource action is made from.
pub type ResourceInput<'a> = ActionInput<'a, ResourceAction>;

/// What creating the object came to.
fn count(ctx: &Context, outcome: &'static str) {
    ctx.metrics
        .actions
        .get_or_create(&ActionLabels {
            kind: "resource",
            outcome,
        })
        .inc();
}

/// The kind's API, or why there is none now.
async fn kind_of(ctx: &Context, t: &TypeRef) -> Result<Result<ApiResource, Why>, Error> {
    Ok(
        match ctx
            .resource_kinds
            .lookup(&ctx.client, t)
            .await
            .map_err(Error::Kube)?
        {
            KindFact::Namespaced(ar) => {
                ctx.resource_kinds.follow(&ar);
                Ok(ar)
            }
            KindFact::ClusterScoped => Err(Why::new(
                "ClusterScopedKind",
                format!("{t} is cluster-scoped; resource actions create namespaced objects only"),
            )),
            KindFact::Unknown(m) => Err(Why::new("UnknownKind", m)),
        },
    )
}

/// Advances a resource action one step.
pub async fn step(
    ctx: &Context,
    input: &ResourceInput<'_>,
    a: &mut ActionStatus,
    now: &str,
) -> Result<JobStep, Error> {
    let d = input.delivery;
    let namespace = d.namespace().unwrap_or_default();
    if let Some(made) = a.resource.clone() {
        observe(ctx, &namespace, input.action, &made, a, now).await?;
        return Ok(JobStep::Observed);
    }
    let fail = |a: &mut ActionStatus, why: Why| -> Result<JobStep, Error> {
        state::transition(a, ActionState::Failed, Some(why), now);
        Ok(JobStep::Observed)
    };
    let built = resource::validate(input.action).and_then(|expected| {
        resource::build(&input.rule.name, input.action, input.event, Some(&expected))
    });
    let (t, obj) = match built {
        Ok(b) => b,
        Err(e) => return fail(a, Why::new(e.reason(), e.to_string())),
    };
    let ar = match kind_of(ctx, &t).await? {
        Ok(ar) => ar,
        // The CRD may be on its way (the route says UnknownKind meanwhile): retried with backoff.
        Err(why) if why.reason == "UnknownKind" => {
            a.attempts += 1;
            return Ok(JobStep::RetryLater(why));
        }
        Err(why) => return fail(a, why),
    };
    let obj: DynamicObject = match serde_json::from_value(obj) {
        Ok(o) => o,
        Err(e) => {
            return fail(
                a,
                Why::new("InvalidResourceTemplate", format!("resource.template: {e}")),
            );
        }
    };
    let name = obj.name_any();
    a.attempts += 1;
    let started = Instant::now();
    match create(ctx, input, &namespace, &ar, &obj).await? {
        Created::Ours { new } => {
            ctx.metrics
                .action_duration
                .get_or_create(&ActionLabels {
                    kind: "resource",
                    outcome: "created",
                })
                .observe(started.elapsed().as_secs_f64());
            a.resource = Some(ResourceStatus {
                api_version: t.api_version.clone(),
                kind: t.kind.clone(),
                name: name.clone(),
                observed: None,
            });
            state::transition(a, ActionState::Running, None, now);
            // No Event per delivery, as for Jobs: status and metric say it.
            if new {
                count(ctx, "created");
            }
            Ok(JobStep::Created)
        }
        Created::Refused(why) => fail(a, why),
        Created::Later(why) => Ok(JobStep::RetryLater(why)),
    }
}

async fn create(
    ctx: &Context,
    input: &ResourceInput<'_>,
    namespace: &str,
    ar: &ApiResource,
    obj: &DynamicObject,
) -> Result<Created, Error> {
    // Created as the route's ServiceAccount: a route creates only what that account may create.
    let acting: Api<DynamicObject> = match ctx.action_client(input.route) {
        Ok(client) => Api::namespaced_with(client, namespace, ar),
        Err(e) => {
            return Ok(Created::Refused(Why::new(
                "ImpersonationFailed",
                e.to_string(),
            )));
        }
    };
    let own: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, ar);
    let reasons = Reasons {
        what: ar.kind.clone(),
        name_taken: "ResourceNameTaken",
        refused: "ResourceRefused",
        gone: Some("UnknownKind"),
    };
    let uid = input.delivery.uid();
    create_once(&acting, &own, obj, uid.as_deref(), &reasons)
        .await
        .map_err(Error::Kube)
}

/// Reads the object and decides what it says about the action.
async fn observe(
    ctx: &Context,
    namespace: &str,
    action: &ResourceAction,
    made: &ResourceStatus,
    a: &mut ActionStatus,
    now: &str,
) -> Result<(), Error> {
    let t = TypeRef {
        api_version: made.api_version.clone(),
        kind: made.kind.clone(),
    };
    let ar = match kind_of(ctx, &t).await? {
        Ok(ar) => ar,
        Err(why) => {
            state::transition(a, ActionState::Failed, Some(why), now);
            count(ctx, "failed");
            return Ok(());
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &ar);
    let Some(mut obj) = api.get_opt(&made.name).await.map_err(Error::Kube)? else {
        let why = Why::new(
            "ResourceDeleted",
            format!(
                "{} {} was deleted before it was seen to finish",
                made.kind, made.name
            ),
        );
        state::transition(a, ActionState::Failed, Some(why), now);
        count(ctx, "failed");
        return Ok(());
    };
    // Bookkeeping of the API server, large and never what an expression is about.
    obj.metadata.managed_fields = None;
    let json = serde_json::to_value(&obj).unwrap_or_default();
    let (s, why, observed) = match resource::observe(action, &json, COST_LIMIT) {
        Ok(o) => {
            let (s, why) = match o.outcome {
                Outcome::Running => (ActionState::Running, None),
                Outcome::Succeeded => (ActionState::Succeeded, None),
                Outcome::Failed(m) => (ActionState::Failed, Some(Why::new("ResourceFailed", m))),
            };
            (s, why, o.observed)
        }
        Err(e) => (
            ActionState::Failed,
            Some(Why::new(e.reason(), e.to_string())),
            resource::summary(&json),
        ),
    };
    if s != a.state && s.is_done() {
        count(
            ctx,
            if s == ActionState::Succeeded {
                "succeeded"
            } else {
                "failed"
            },
        );
    }
    if let Some(r) = a.resource.as_mut() {
        r.observed = observed;
    }
    state::transition(a, s, why, now);
    Ok(())
}
