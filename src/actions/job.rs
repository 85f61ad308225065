//! The Job a rule creates: the user's JobTemplateSpec, named deterministically, owned by the delivery,
//! labelled, and with the event's facts in every container's environment. Event data never reaches a
//! command line: only environment variables, which a shell does not re-parse.

use super::EventContext;
use crate::naming;
use crate::resources::SecretKeySelector;
use crate::resources::names::{
    LABEL_DELIVERY, LABEL_EVENT_TYPE, LABEL_MANAGED_BY, LABEL_ROUTE, LABEL_RULE, MANAGED_BY, PREFIX,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, SecretKeySelector as CoreSecretKeySelector,
};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Largest value of one `ASC_*` variable. Linux refuses to start a process with a single environment
/// string over 128 KiB (`MAX_ARG_STRLEN`), so the container would never run; larger values are replaced
/// by [`OMITTED_MARKER`] and named in `ASC_OMITTED`.
pub const MAX_ENV_VALUE_BYTES: usize = 64 * 1024;
/// The value of a variable that was too large to pass.
pub const OMITTED_MARKER: &str =
    "(omitted: larger than 64 KiB; read the WebhookDelivery's spec.payload)";
/// Comma-separated names of the variables replaced by [`OMITTED_MARKER`]; empty when none were.
pub const ENV_OMITTED: &str = "ASC_OMITTED";

/// A Job and what could not be passed to it.
#[derive(Debug, Clone)]
pub struct BuiltJob {
    /// The Job to create.
    pub job: Job,
    /// Variables whose values were over [`MAX_ENV_VALUE_BYTES`] and were replaced by the marker, for
    /// the delivery's status to say so.
    pub omitted_env: Vec<&'static str>,
}

/// Why a rule's Job template cannot become a Job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobTemplateError {
    /// The template is not a JobTemplateSpec.
    #[error("job.template is not a batch/v1 JobTemplateSpec: {0}")]
    Shape(String),
    /// The template has no pod spec or no containers.
    #[error("job.template.spec.template.spec.containers must list at least one container")]
    NoContainers,
    /// A container lacks a name or an image.
    #[error("container #{0} of job.template needs a name and an image")]
    IncompleteContainer(usize),
    /// Jobs only allow `Never` or `OnFailure`.
    #[error("job.template's restartPolicy must be Never or OnFailure, not {0}")]
    RestartPolicy(String),
    /// A command or args entry names an event variable in `$(…)`, which Kubernetes expands.
    #[error(
        "container {container:?} mentions $(ASC_…) in its {field}: Kubernetes expands $(VAR) in \
         command and args, so event text (TestFlight feedback, say) would become part of the command \
         line; read \"$ASC_…\" from the environment inside the script instead"
    )]
    UnsafeExpansion {
        /// The container's name.
        container: String,
        /// `command` or `args`.
        field: &'static str,
    },
}

/// Refuses templates whose `command` or `args` (of any container or init container) mention `$(ASC_`.
///
/// Kubernetes substitutes `$(VAR)` in `command` and `args` before the container starts, so
/// `args: ["sh", "-c", "notify $(ASC_PAYLOAD)"]` hands a shell text that a TestFlight tester wrote. The
/// same variables read as `"$ASC_PAYLOAD"` inside the script stay data. Even the escaped `$$(ASC_` is
/// refused: one lost `$` in an edit turns it back into an expansion.
pub fn check_expansions(template: &JobTemplateSpec) -> Result<(), JobTemplateError> {
    let Some(pod) = template
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
    else {
        return Ok(());
    };
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        for (field, values) in [("command", &c.command), ("args", &c.args)] {
            if values.iter().flatten().any(|v| v.contains("$(ASC_")) {
                return Err(JobTemplateError::UnsafeExpansion {
                    container: c.name.clone(),
                    field,
                });
            }
        }
    }
    Ok(())
}

/// The fastlane API-key variables, by reference to the credential's Secret.
#[derive(Debug, Clone)]
pub struct ApiKeyEnv {
    /// `APP_STORE_CONNECT_API_KEY_KEY_ID`.
    pub key_id: String,
    /// `APP_STORE_CONNECT_API_KEY_ISSUER_ID`, absent for individual keys.
    pub issuer_id: Option<String>,
    /// Where `APP_STORE_CONNECT_API_KEY_KEY` (the .p8 contents) comes from.
    pub private_key: SecretKeySelector,
}

/// Parses and checks a rule's template.
pub fn parse_template(template: &serde_json::Value) -> Result<JobTemplateSpec, JobTemplateError> {
    let parsed: JobTemplateSpec = serde_json::from_value(template.clone())
        .map_err(|e| JobTemplateError::Shape(e.to_string()))?;
    let pod = parsed
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or(JobTemplateError::NoContainers)?;
    if pod.containers.is_empty() {
        return Err(JobTemplateError::NoContainers);
    }
    for (i, c) in pod.containers.iter().enumerate() {
        if c.name.is_empty() || c.image.as_deref().is_none_or(str::is_empty) {
            return Err(JobTemplateError::IncompleteContainer(i));
        }
    }
    match pod.restart_policy.as_deref() {
        None | Some("Never") | Some("OnFailure") => Ok(parsed),
        Some(other) => Err(JobTemplateError::RestartPolicy(other.to_owned())),
    }
}

/// Builds the Job that `rule` runs for the delivery in `ctx` (see [`build_job_reporting`] for the
/// variables that had to be left out).
pub fn build_job(
    rule: &str,
    template: &serde_json::Value,
    ctx: &EventContext<'_>,
    api_key: Option<&ApiKeyEnv>,
) -> Result<Job, JobTemplateError> {
    build_job_reporting(rule, template, ctx, api_key).map(|b| b.job)
}

/// Builds the Job that `rule` runs for the delivery in `ctx`, and names the variables omitted as too
/// large.
pub fn build_job_reporting(
    rule: &str,
    template: &serde_json::Value,
    ctx: &EventContext<'_>,
    api_key: Option<&ApiKeyEnv>,
) -> Result<BuiltJob, JobTemplateError> {
    let parsed = parse_template(template)?;
    check_expansions(&parsed)?;
    let delivery = ctx.delivery;
    let route = &delivery.spec.route;
    // Each replay makes Jobs of its own; earlier ones stay as they were.
    let run = delivery.status.as_ref().map_or(
        0,
        crate::resources::delivery::WebhookDeliveryStatus::replay_count,
    );
    let name = naming::job_name_for_run(route, rule, &delivery.spec.event_id, run);

    let mut labels = parsed
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(BTreeMap::from([
        (LABEL_ROUTE.to_owned(), naming::label_value(route)),
        (LABEL_RULE.to_owned(), naming::label_value(rule)),
        (
            LABEL_EVENT_TYPE.to_owned(),
            naming::label_value(&delivery.spec.event_type),
        ),
        (
            LABEL_DELIVERY.to_owned(),
            naming::label_value(&delivery.name_any()),
        ),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]));
    let annotations = parsed.metadata.as_ref().and_then(|m| m.annotations.clone());

    let mut spec: JobSpec = parsed.spec.unwrap_or_default();
    let (env, omitted_env) = event_env(ctx, api_key);
    let mut pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    pod_labels.extend(
        labels
            .iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    spec.template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels = Some(pod_labels);
    if let Some(pod) = spec.template.spec.as_mut() {
        pod.restart_policy.get_or_insert_with(|| "Never".to_owned());
        for c in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            set_env(c, &env);
        }
    }

    let job = Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: delivery.namespace(),
            labels: Some(labels),
            annotations,
            owner_references: delivery.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    };
    Ok(BuiltJob { job, omitted_env })
}

fn event_env(
    ctx: &EventContext<'_>,
    api_key: Option<&ApiKeyEnv>,
) -> (Vec<EnvVar>, Vec<&'static str>) {
    let mut omitted = Vec::new();
    let mut env: Vec<EnvVar> = ctx
        .env()
        .into_iter()
        .map(|(name, value)| {
            let value = if value.len() > MAX_ENV_VALUE_BYTES {
                omitted.push(name);
                OMITTED_MARKER.to_owned()
            } else {
                value
            };
            EnvVar {
                name: name.to_owned(),
                value: Some(value),
                value_from: None,
            }
        })
        .collect();
    // Always set, so a template cannot pre-set it and a script can rely on it.
    env.push(EnvVar {
        name: ENV_OMITTED.into(),
        value: Some(omitted.join(",")),
        value_from: None,
    });
    if let Some(key) = api_key {
        env.push(EnvVar {
            name: "APP_STORE_CONNECT_API_KEY_KEY_ID".into(),
            value: Some(key.key_id.clone()),
            value_from: None,
        });
        if let Some(issuer) = &key.issuer_id {
            env.push(EnvVar {
                name: "APP_STORE_CONNECT_API_KEY_ISSUER_ID".into(),
                value: Some(issuer.clone()),
                value_from: None,
            });
        }
        env.push(EnvVar {
            name: "APP_STORE_CONNECT_API_KEY_KEY".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(CoreSecretKeySelector {
                    name: key.private_key.name.clone(),
                    key: key.private_key.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    (env, omitted)
}

/// Our variables win over same-named ones in the template: event facts must not be spoofable by a
/// template default.
fn set_env(container: &mut Container, vars: &[EnvVar]) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| !vars.iter().any(|v| v.name == e.name));
    env.extend(vars.iter().cloned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::context::tests::{delivery, enrichment};
    use serde_json::json;

    fn template() -> serde_json::Value {
        json!({
            "metadata": {"labels": {"team": "ios"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "initContainers": [{"name": "prep", "image": "busybox"}],
                "containers": [{"name": "fastlane", "image": "fastlane:2", "command": ["fastlane", "submit"],
                                "env": [{"name": "ASC_NEW_STATE", "value": "spoofed"}, {"name": "KEEP", "value": "1"}]}]
            }}}
        })
    }

    fn env_of(job: &Job, container: usize) -> Vec<EnvVar> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[container]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn a_template_expanding_asc_variables_never_becomes_a_job() {
        let d = delivery("build-upload-complete");
        let unsafe_template = serde_json::json!({"spec": {"template": {"spec": {"containers": [
            {"name": "notify", "image": "alpine", "args": ["sh", "-c", "echo $(ASC_PAYLOAD)"]}]}}}});
        let err = build_job(
            "notify",
            &unsafe_template,
            &EventContext {
                delivery: &d,
                enrichment: None,
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            JobTemplateError::UnsafeExpansion {
                container: "notify".into(),
                field: "args"
            }
        );
    }

    #[test]
    fn job_is_named_labelled_and_owned_by_the_delivery() {
        let d = delivery("build-upload-complete");
        let job = build_job(
            "submit",
            &template(),
            &EventContext {
                delivery: &d,
                enrichment: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(naming::job_name("release", "submit", &d.spec.event_id).as_str())
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("ios"));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_ROUTE], "release");
        assert_eq!(labels[LABEL_RULE], "submit");
        assert_eq!(labels[LABEL_EVENT_TYPE], "buildUploadStateUpdated");
        assert_eq!(labels[LABEL_DELIVERY], d.name_any());
        assert_eq!(labels["team"], "ios");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("WebhookDelivery", "delivery-uid", Some(true))
        );
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn every_container_gets_the_event_and_template_values_cannot_spoof_it() {
        let d = delivery("build-upload-complete");
        let e = enrichment("buildUploads-3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
        let job = build_job(
            "submit",
            &template(),
            &EventContext {
                delivery: &d,
                enrichment: Some(&e),
            },
            None,
        )
        .unwrap();
        let env = env_of(&job, 0);
        let get = |n: &str| {
            env.iter()
                .find(|v| v.name == n)
                .and_then(|v| v.value.clone())
        };
        assert_eq!(get("ASC_NEW_STATE").as_deref(), Some("COMPLETE"));
        assert_eq!(env.iter().filter(|v| v.name == "ASC_NEW_STATE").count(), 1);
        assert_eq!(get("KEEP").as_deref(), Some("1"));
        assert!(get("ASC_BUILD_NUMBER").is_some());
        assert!(get("ASC_PAYLOAD").unwrap().contains(&d.spec.event_id));
        let init = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap();
        assert!(
            init[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "ASC_EVENT_ID")
        );
        let command = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .command
            .clone();
        assert_eq!(
            command,
            Some(vec!["fastlane".to_owned(), "submit".to_owned()])
        );
    }

    #[test]
    fn oversized_payload_is_omitted_with_a_marker_and_reported() {
        let mut d = delivery("build-upload-complete");
        d.spec.payload = format!(r#"{{"pad": "{}"}}"#, "p".repeat(200 * 1024));
        let built = build_job_reporting(
            "submit",
            &template(),
            &EventContext {
                delivery: &d,
                enrichment: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(built.omitted_env, vec!["ASC_PAYLOAD"]);
        let env = env_of(&built.job, 0);
        let get = |n: &str| {
            env.iter()
                .find(|v| v.name == n)
                .and_then(|v| v.value.clone())
        };
        assert_eq!(get("ASC_PAYLOAD").as_deref(), Some(OMITTED_MARKER));
        assert_eq!(get(ENV_OMITTED).as_deref(), Some("ASC_PAYLOAD"));
        assert_eq!(get("ASC_NEW_STATE").as_deref(), Some("COMPLETE"));
        assert!(
            env.iter()
                .all(|v| v.value.as_deref().unwrap_or_default().len() <= MAX_ENV_VALUE_BYTES)
        );

        let small = delivery("build-upload-complete");
        let built = build_job_reporting(
            "submit",
            &template(),
            &EventContext {
                delivery: &small,
                enrichment: None,
            },
            None,
        )
        .unwrap();
        assert!(built.omitted_env.is_empty());
        assert!(
            env_of(&built.job, 0)
                .iter()
                .any(|v| v.name == ENV_OMITTED && v.value.as_deref() == Some(""))
        );
    }

    #[test]
    fn api_key_variables_reference_the_secret_and_never_copy_the_key() {
        let d = delivery("build-upload-complete");
        let key = ApiKeyEnv {
            key_id: "TEST2K9Q7X".into(),
            issuer_id: Some("issuer".into()),
            private_key: SecretKeySelector {
                name: "asc-key".into(),
                key: "AuthKey.p8".into(),
                namespace: None,
            },
        };
        let job = build_job(
            "submit",
            &template(),
            &EventContext {
                delivery: &d,
                enrichment: None,
            },
            Some(&key),
        )
        .unwrap();
        let env = env_of(&job, 0);
        let key_var = env
            .iter()
            .find(|v| v.name == "APP_STORE_CONNECT_API_KEY_KEY")
            .unwrap();
        assert!(key_var.value.is_none());
        let r = key_var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("asc-key", "AuthKey.p8"));
        assert!(
            env.iter()
                .any(|v| v.name == "APP_STORE_CONNECT_API_KEY_ISSUER_ID")
        );
    }

    #[test]
    fn invalid_templates_say_what_is_wrong() {
        assert_eq!(
            parse_template(&json!({"spec": {"template": {"spec": {"containers": []}}}})),
            Err(JobTemplateError::NoContainers)
        );
        assert_eq!(
            parse_template(&json!({"spec": {}})),
            Err(JobTemplateError::NoContainers)
        );
        assert_eq!(
            parse_template(
                &json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
            ),
            Err(JobTemplateError::IncompleteContainer(0))
        );
        assert!(matches!(
            parse_template(
                &json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "a", "image": "b"}]}}}})
            ),
            Err(JobTemplateError::RestartPolicy(_))
        ));
        assert!(matches!(
            parse_template(&json!({"spec": {"backoffLimit": "many"}})),
            Err(JobTemplateError::Shape(_))
        ));
    }
}
