//! `asc-webhook-operator replay`: asks the operator to run a delivery's matching rules once more, by
//! setting its `asc.webhooks.dev/replay` annotation with the user's own kubeconfig (so the API server's
//! RBAC decides who may replay). The same patch removes the finished label, which brings a finished
//! delivery back to the delivery controller at once.

use crate::cli::ReplayArgs;
use crate::resources::WebhookDelivery;
use crate::resources::delivery::ANNOTATION_REPLAY;
use crate::resources::names::LABEL_FINISHED;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

/// Why a replay could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No kubeconfig or in-cluster configuration.
    #[error("could not configure a Kubernetes client from the kubeconfig")]
    Config(#[source] kube::Error),
    /// The delivery does not exist.
    #[error("webhookdelivery {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Reading or patching the delivery failed (RBAC, connection).
    #[error("the API server refused or failed")]
    Api(#[source] kube::Error),
}

/// What `replay` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// `namespace/name` of the delivery.
    pub delivery: String,
    /// The annotation value set.
    pub value: String,
    /// The value was the one a replay already ran (or was asked) for: nothing new runs.
    pub unchanged: bool,
}

impl std::fmt::Display for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unchanged {
            write!(
                f,
                "webhookdelivery {} already has {ANNOTATION_REPLAY}={}: nothing new runs (give another --value)",
                self.delivery, self.value
            )
        } else {
            write!(
                f,
                "webhookdelivery {} annotated {ANNOTATION_REPLAY}={}: its matching rules run once more (kubectl describe webhookdelivery -n {} shows status.replays)",
                self.delivery,
                self.value,
                self.delivery.split('/').next().unwrap_or_default()
            )
        }
    }
}

/// Runs the subcommand with the kubeconfig's client.
pub async fn run(args: &ReplayArgs) -> Result<Replayed, ReplayError> {
    let client = Client::try_default().await.map_err(ReplayError::Config)?;
    request(
        client,
        &args.namespace,
        &args.delivery,
        args.value.as_deref(),
    )
    .await
}

/// Sets the replay annotation of delivery `namespace/name` to `value`, or to the next integer.
pub async fn request(
    client: Client,
    namespace: &str,
    name: &str,
    value: Option<&str>,
) -> Result<Replayed, ReplayError> {
    let api: Api<WebhookDelivery> = Api::namespaced(client, namespace);
    let d = api
        .get_opt(name)
        .await
        .map_err(ReplayError::Api)?
        .ok_or_else(|| ReplayError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let value = value.map_or_else(|| next_value(&d), |v| v.trim().to_owned());
    let unchanged =
        d.annotations().get(ANNOTATION_REPLAY).map(|v| v.trim()) == Some(value.as_str());
    let delivery = format!("{namespace}/{name}");
    if unchanged {
        return Ok(Replayed {
            delivery,
            value,
            unchanged,
        });
    }
    let patch = serde_json::json!({"metadata": {
        "annotations": {ANNOTATION_REPLAY: value},
        "labels": {LABEL_FINISHED: null},
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(ReplayError::Api)?;
    Ok(Replayed {
        delivery,
        value,
        unchanged,
    })
}

/// One more than the largest integer among the annotation and the replays so far. Pure.
pub fn next_value(d: &WebhookDelivery) -> String {
    let replays = d.status.as_ref().and_then(|s| s.replays.as_ref());
    let as_int = |v: Option<&str>| v.and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
    let highest = as_int(d.annotations().get(ANNOTATION_REPLAY).map(String::as_str))
        .max(as_int(replays.and_then(|r| r.last_value.as_deref())))
        .max(replays.map_or(0, |r| i64::from(r.count)));
    (highest.saturating_add(1)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::{ReplayStatus, WebhookDeliveryStatus};

    fn delivery(annotation: Option<&str>, replays: Option<ReplayStatus>) -> WebhookDelivery {
        let route = crate::receiver::record::tests::route();
        let event = crate::asc::event::WebhookEvent::parse(bytes::Bytes::from_static(
            include_bytes!("../tests/fixtures/asc/events/build-upload-complete.json"),
        ))
        .unwrap();
        let mut d = crate::receiver::record::build_delivery(&route, &event, None, "t0");
        if let Some(v) = annotation {
            d.metadata.annotations = Some([(ANNOTATION_REPLAY.to_owned(), v.to_owned())].into());
        }
        d.status = Some(WebhookDeliveryStatus {
            replays,
            ..Default::default()
        });
        d
    }

    #[test]
    fn the_next_value_is_one_more_than_any_replay_so_far() {
        assert_eq!(next_value(&delivery(None, None)), "1");
        assert_eq!(next_value(&delivery(Some("4"), None)), "5");
        let replays = ReplayStatus {
            count: 2,
            last_value: Some("2026-12-01T10:00:00Z".into()),
            last_time: None,
        };
        assert_eq!(
            next_value(&delivery(Some("2026-12-01T10:00:00Z"), Some(replays))),
            "3",
            "a value that is not a number counts by the replays made"
        );
    }

    #[test]
    fn the_message_says_what_was_set_and_whether_anything_runs() {
        let done = Replayed {
            delivery: "ios/release-abc".into(),
            value: "2".into(),
            unchanged: false,
        };
        let text = done.to_string();
        assert!(text.contains("ios/release-abc") && text.contains("asc.webhooks.dev/replay=2"));
        let same = Replayed {
            unchanged: true,
            ..done
        };
        assert!(same.to_string().contains("nothing new runs"));
    }
}
