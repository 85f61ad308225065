//! Kubernetes Events for the controllers' objects, a repeat folded into the first Event's series as
//! kube's `Recorder` does, without its memory. kube's recorder keeps a full copy of every Event it
//! published (object reference, note, names, times: ~3 KiB each in its table) and forgets them only
//! during a later publish, six minutes on: 1,000 routes registering their Apple webhooks left ~3 MiB of
//! `WebhookCreated` copies resident at idle, for good if nothing is published after. Here a repeat is
//! recognised by a 64-bit hash of what makes it one (type, action, reason, note, regarding object), and
//! only the Event's name, its count and when it was last seen are kept.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// How long a published Event takes repeats into its series (kube's recorder: the same).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What is kept of an Event published within the window.
struct Recent {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as `reporter`.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<HashMap<u64, Recent>>,
}

fn repeat_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    matches!(ev.type_, EventType::Warning).hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    ev.note.hash(&mut h);
    for part in [
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
    ] {
        part.hash(&mut h);
    }
    h.finish()
}

impl Recorder {
    /// A recorder that publishes with `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Recent>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `ev` about `regarding`: a new Event, or the next count of the same Event's series when
    /// it was published within the last six minutes.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = repeat_key(ev, regarding);
        let repeat = {
            let mut recent = self.recent();
            recent.retain(|_, r| r.last + SERIES_WINDOW > now);
            if recent.capacity() > 4 * recent.len() + 16 {
                recent.shrink_to_fit();
            }
            recent.get(&key).map(|r| (r.name.clone(), r.count + 1))
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let (name, count) = match repeat {
            Some((name, count)) => {
                let patch = serde_json::json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }});
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                (name, count)
            }
            None => {
                let event = self.new_event(ev, regarding, now);
                let name = event.metadata.name.clone().unwrap_or_default();
                events.create(&PostParams::default(), &event).await?;
                (name.into_boxed_str(), 1)
            }
        };
        self.recent().insert(
            key,
            Recent {
                name,
                count,
                last: now,
            },
        );
        Ok(())
    }

    /// The Event as kube's recorder writes it.
    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }

    /// Events held as publishable repeats (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.recent().len()
    }
}

#[cfg(test)]
mod tests {
    //! Request-level: the exact API calls, against a `tower-test` mock behind a real `kube::Client`.
    use super::*;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn recorder() -> (Recorder, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let reporter = Reporter {
            controller: "asc-webhook-operator".into(),
            instance: Some("pod-1".into()),
        };
        (
            Recorder::new(Client::new(service, "default"), reporter),
            handle,
        )
    }

    fn route() -> ObjectReference {
        ObjectReference {
            api_version: Some("asc.webhooks.dev/v1alpha1".into()),
            kind: Some("WebhookRoute".into()),
            namespace: Some("ios".into()),
            name: Some("release".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    /// Answers the next request with its own body and returns (method, path, body).
    async fn answer(handle: &mut Handle) -> (String, String, serde_json::Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut answer = json.clone();
        answer["apiVersion"] = "events.k8s.io/v1".into();
        answer["kind"] = "Event".into();
        if answer["metadata"]["name"].is_null() {
            answer["metadata"]["name"] = "release.1".into();
        }
        send.send_response(
            Response::builder()
                .status(if method == "POST" { 201 } else { 200 })
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        (method, path, json)
    }

    #[tokio::test]
    async fn a_repeat_counts_in_the_first_events_series_and_another_note_is_a_new_event() {
        let (recorder, mut handle) = recorder();
        let verifier = tokio::spawn(async move {
            let (method, path, first) = answer(&mut handle).await;
            assert_eq!(method, "POST");
            assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/ios/events");
            assert_eq!(first["reason"], "WebhookCreated");
            assert_eq!(first["note"], "created 1");
            assert_eq!(first["regarding"]["name"], "release");
            assert_eq!(first["reportingController"], "asc-webhook-operator");
            assert_eq!(first["reportingInstance"], "pod-1");
            assert_eq!(first["type"], "Normal");
            let name = first["metadata"]["name"].as_str().unwrap().to_owned();
            assert!(name.starts_with("release."), "{name}");

            let (method, path, repeat) = answer(&mut handle).await;
            assert_eq!(method, "PATCH");
            assert_eq!(
                path,
                format!("/apis/events.k8s.io/v1/namespaces/ios/events/{name}")
            );
            assert_eq!(repeat["series"]["count"], 2);
            assert!(repeat["series"]["lastObservedTime"].is_string());
            assert!(repeat.get("note").is_none(), "only the series is patched");

            let (_, _, third) = answer(&mut handle).await;
            assert_eq!(third["series"]["count"], 3);

            let (method, _, other) = answer(&mut handle).await;
            assert_eq!(method, "POST", "another note is another Event");
            assert_eq!(other["note"], "created 2");
        });
        let created = event("WebhookCreated", "created 1");
        recorder.publish(&created, &route()).await.unwrap();
        recorder.publish(&created, &route()).await.unwrap();
        recorder.publish(&created, &route()).await.unwrap();
        recorder
            .publish(&event("WebhookCreated", "created 2"), &route())
            .await
            .unwrap();
        verifier.await.unwrap();
        assert_eq!(recorder.held(), 2, "one entry per distinct Event");
    }

    #[tokio::test]
    async fn a_failed_publish_is_not_remembered() {
        let (recorder, mut handle) = recorder();
        let verifier = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.method(), http::Method::POST);
            send.send_response(
                Response::builder()
                    .status(403)
                    .body(Body::from(
                        serde_json::to_vec(&serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "code": 403, "reason": "Forbidden", "message": "no"
                        }))
                        .unwrap(),
                    ))
                    .unwrap(),
            );
        });
        let e = event("WebhookCreated", "created 1");
        assert!(recorder.publish(&e, &route()).await.is_err());
        verifier.await.unwrap();
        assert_eq!(recorder.held(), 0);
    }
}
