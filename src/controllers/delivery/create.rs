//! Creating an action's object (a Job, or any kind for resource actions) exactly once.
//!
//! The name is deterministic, so a repeated create is AlreadyExists; the object found under that name
//! is adopted only when this delivery owns it. The API server's refusals are sorted into "fails for
//! good" and "try again later" the same way for every kind.

use super::state::Why;
use crate::actions::EventContext;
use crate::resources::names::FIELD_MANAGER;
use crate::resources::route::Rule;
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Everything an action that creates an object (a Job, or any kind) is made from.
pub struct ActionInput<'a, A> {
    /// The delivery (owner of the object).
    pub delivery: &'a WebhookDelivery,
    /// Its route.
    pub route: &'a WebhookRoute,
    /// The rule.
    pub rule: &'a Rule,
    /// The rule's action.
    pub action: &'a A,
    /// Event data for the template.
    pub event: &'a EventContext<'a>,
}

/// What creating the object came to.
pub(super) enum Created {
    /// Created now, or found already made by this delivery.
    Ours { new: bool },
    /// The API server refused for good; the action fails.
    Refused(Why),
    /// Refused for now (quota, a name still being deleted, a kind gone missing): retry later.
    Later(Why),
}

/// The reasons an action kind reports.
pub(super) struct Reasons {
    /// What the object is called in messages (`Job`, `PipelineRun`).
    pub what: String,
    /// The name is held by an object this delivery does not own.
    pub name_taken: &'static str,
    /// The API server refused the object itself (400/422).
    pub refused: &'static str,
    /// The API server no longer serves the kind (404 on create), when that can happen.
    pub gone: Option<&'static str>,
}

/// Creates `obj` as `acting` (the route's identity); on AlreadyExists reads it with `own` (the
/// operator's rights) and adopts it only if delivery `owner_uid` owns it.
pub(super) async fn create_once<K>(
    acting: &Api<K>,
    own: &Api<K>,
    obj: &K,
    owner_uid: Option<&str>,
    reasons: &Reasons,
) -> Result<Created, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.name_any();
    let what = &reasons.what;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match acting.create(&params, obj).await {
        Ok(_) => Ok(Created::Ours { new: true }),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = own.get_opt(&name).await?;
            let ours = existing.as_ref().is_some_and(|o| {
                o.owner_references()
                    .iter()
                    .any(|r| r.kind == "WebhookDelivery" && Some(r.uid.as_str()) == owner_uid)
            });
            Ok(match existing {
                Some(_) if ours => Created::Ours { new: false },
                Some(_) => Created::Refused(Why::new(
                    reasons.name_taken,
                    format!(
                        "{what} {name} already exists and does not belong to this delivery; delete or rename it"
                    ),
                )),
                // Deleted between the create and the read: try again.
                None => Created::Later(Why::new(
                    reasons.name_taken,
                    format!("{what} {name} existed and was being deleted"),
                )),
            })
        }
        // ResourceQuota refusals clear when other objects finish.
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("exceeded quota") => {
            Ok(Created::Later(Why::new(
                "QuotaExceeded",
                format!(
                    "the API server refused {what} {name} for now: {}",
                    s.message
                ),
            )))
        }
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Created::Refused(Why::new(
            "Forbidden",
            format!("the API server refused {what} {name}: {}", s.message),
        ))),
        // The kind went away between discovery and create (CRD deleted): the route will say so.
        Err(kube::Error::Api(s)) if s.code == 404 => match reasons.gone {
            Some(gone) => Ok(Created::Later(Why::new(
                gone,
                format!("the API server no longer serves {what}: {}", s.message),
            ))),
            None => Err(kube::Error::Api(s)),
        },
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
            Ok(Created::Refused(Why::new(
                reasons.refused,
                format!("the API server refused {what} {name}: {}", s.message),
            )))
        }
        Err(e) => Err(e),
    }
}
