//! The mock acting as Apple's sending side: webhook calls dispatched to the stateful store, pings sent
//! after `POST /v1/webhookPings`, events "sent" by tests, and accessors for assertions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::response::Response;
use http::Method;
use serde_json::Value;

use super::deliveries::{self, MockDelivery, SignedEvent};
use super::webhooks::{EVENT_TYPES, MockWebhook};
use super::{AscMock, Shared, lock};

impl Shared {
    pub(super) fn webhook_call(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Response {
        let base = self.base_url.get().cloned().unwrap_or_default();
        if method == Method::GET
            && let Some(id) = path
                .strip_prefix("/v1/webhooks/")
                .and_then(|p| p.strip_suffix("/deliveries"))
        {
            let exists = lock(&self.webhooks).webhooks.contains_key(id);
            let order = *lock(&self.log_order);
            return deliveries::list(&lock(&self.deliveries), exists, id, query, &base, order);
        }
        if method == Method::POST && path == "/v1/webhookDeliveries" {
            return self.redeliver(body);
        }
        let handled = lock(&self.webhooks).handle(method, path, query, body, &base);
        if let Some(webhook_id) = handled.ping {
            // Apple answers the ping request first and delivers the ping on its own schedule.
            let shared = self.clone();
            tokio::spawn(async move {
                // Every ping is a new event (its own id), as each of Apple's pings is.
                let n = shared.next_delivery.fetch_add(1, Ordering::Relaxed);
                let id = format!("ping-{n:06}");
                let payload = deliveries::ping_payload(&id);
                if shared.take_lost_ping() {
                    let mut lost = deliveries::logged(
                        &webhook_id,
                        &payload,
                        deliveries::DeliveryState::Failed,
                        &deliveries::now(),
                        n,
                    );
                    lost.error_message = Some(
                        "The endpoint could not be reached: connection closed before message completed"
                            .into(),
                    );
                    lost.event.id = id;
                    lock(&shared.deliveries).push(lost);
                    return;
                }
                shared.send(&webhook_id, &payload, true).await;
            });
        }
        handled.response
    }

    /// Whether the next ping delivery is to be lost (one fewer left to lose).
    fn take_lost_ping(&self) -> bool {
        self.lost_pings
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn sign(&self, webhook_id: &str, body: &[u8]) -> Option<SignedEvent> {
        let hooks = lock(&self.webhooks);
        let w = hooks.webhooks.get(webhook_id)?;
        Some(deliveries::signed(w, body))
    }

    async fn deliver(&self, event: &SignedEvent) -> MockDelivery {
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        self.deliver_as(event, n, format!("event-{n:06}"), false)
            .await
    }

    async fn deliver_as(
        &self,
        event: &SignedEvent,
        n: u64,
        event_id: String,
        redelivery: bool,
    ) -> MockDelivery {
        let mut delivery =
            deliveries::post(&self.sender, event, format!("delivery-{n:06}"), event_id).await;
        delivery.redelivery = redelivery;
        lock(&self.deliveries).push(delivery.clone());
        delivery
    }

    /// `POST /v1/webhookDeliveries`: the template's event again, to the webhook's current URL, signed
    /// with its current secret, logged as a redelivery.
    fn redeliver(self: &Arc<Self>, body: &[u8]) -> Response {
        let template = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/data/relationships/template/data/id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let found = lock(&self.deliveries)
            .iter()
            .find(|d| d.id == template)
            .cloned();
        let not_found = |detail: &str| {
            super::error(
                http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The specified resource does not exist",
                detail,
            )
        };
        let Some(original) = found else {
            return not_found(&format!(
                "There is no resource of type 'webhookDeliveries' with id '{template}'"
            ));
        };
        let Some(event) = self.sign(&original.webhook_id, original.event.payload.as_bytes()) else {
            return not_found("The webhook of this delivery no longer exists");
        };
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let shared = self.clone();
        let event_id = original.event.id.clone();
        tokio::spawn(async move {
            shared.deliver_as(&event, n, event_id, true).await;
        });
        super::json_response(
            http::StatusCode::CREATED,
            bytes::Bytes::from(
                serde_json::json!({"data": {"type": "webhookDeliveries", "id": format!("delivery-{n:06}"),
                    "attributes": {"redelivery": true, "deliveryState": "PENDING"}}})
                .to_string(),
            ),
        )
    }

    /// Signs with the current secret and delivers, unless the webhook is gone, disabled or (for events)
    /// not subscribed to the payload's type.
    async fn send(&self, webhook_id: &str, body: &[u8], ping: bool) -> Option<MockDelivery> {
        {
            let hooks = lock(&self.webhooks);
            let w = hooks.webhooks.get(webhook_id)?;
            if !ping && (!w.enabled || !subscribed(w, body)) {
                return None;
            }
        }
        let event = self.sign(webhook_id, body)?;
        Some(self.deliver(&event).await)
    }
}

/// Whether the payload's `data.type` (camelCase) is one of the webhook's subscription names.
fn subscribed(w: &MockWebhook, body: &[u8]) -> bool {
    let t = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/data/type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let snake = deliveries::screaming(&t);
    EVENT_TYPES.contains(&snake.as_str()) && w.event_types.contains(&snake)
}

impl AscMock {
    /// Every webhook, by id.
    pub fn webhooks(&self) -> Vec<MockWebhook> {
        lock(&self.shared.webhooks)
            .webhooks
            .values()
            .cloned()
            .collect()
    }

    /// One webhook.
    pub fn webhook(&self, id: &str) -> Option<MockWebhook> {
        lock(&self.shared.webhooks).webhooks.get(id).cloned()
    }

    /// Adds a webhook directly, as if made in the App Store Connect UI; returns its id.
    pub fn add_webhook(&self, mut webhook: MockWebhook) -> String {
        let mut state = lock(&self.shared.webhooks);
        if webhook.id.is_empty() {
            webhook.id = format!("ui-{:04}", state.webhooks.len() + 1);
        }
        let id = webhook.id.clone();
        state.apps.insert(webhook.app_id.clone());
        state.webhooks.insert(id.clone(), webhook);
        id
    }

    /// Changes a webhook as a person in the App Store Connect UI would; `false` if it does not exist.
    pub fn edit_webhook(&self, id: &str, edit: impl FnOnce(&mut MockWebhook)) -> bool {
        match lock(&self.shared.webhooks).webhooks.get_mut(id) {
            Some(w) => {
                edit(w);
                true
            }
            None => false,
        }
    }

    /// Deletes a webhook as in the App Store Connect UI; `false` if it did not exist.
    pub fn delete_webhook(&self, id: &str) -> bool {
        lock(&self.shared.webhooks).webhooks.remove(id).is_some()
    }

    /// Makes an app exist (the fixture app `1234567890` always does).
    pub fn add_app(&self, id: &str) {
        lock(&self.shared.webhooks).apps.insert(id.to_owned());
    }

    /// Signs `body` with the webhook's current secret without sending it.
    pub fn sign_event(&self, webhook_id: &str, body: &[u8]) -> Option<SignedEvent> {
        self.shared.sign(webhook_id, body)
    }

    /// Delivers an event signed earlier (to the URL it was signed for) and logs the outcome.
    pub async fn deliver(&self, event: &SignedEvent) -> MockDelivery {
        self.shared.deliver(event).await
    }

    /// Sends `body` as App Store Connect would: signed with the current secret, to the webhook's URL, if
    /// the webhook exists, is enabled and subscribes to the payload's type (`None` otherwise).
    pub async fn send_event(&self, webhook_id: &str, body: &[u8]) -> Option<MockDelivery> {
        self.shared.send(webhook_id, body, false).await
    }

    /// Loses the next `n` ping deliveries: each ping request is answered as usual, but its delivery
    /// never reaches the receiver and is logged `FAILED`, as when the connection it was sent on closed
    /// under it (a kept-alive connection the receiver closed at that moment, a proxy's 502). Apple does
    /// not document retrying such a delivery; neither does this mock.
    pub fn lose_ping_deliveries(&self, n: usize) {
        self.shared.lost_pings.store(n, Ordering::Relaxed);
    }

    /// The delivery log, oldest first.
    pub fn deliveries(&self) -> Vec<MockDelivery> {
        lock(&self.shared.deliveries).clone()
    }

    /// Serves the delivery log in `order` from now on (oldest-first until set).
    pub fn set_log_order(&self, order: deliveries::LogOrder) {
        *lock(&self.shared.log_order) = order;
    }

    /// Adds an entry to the delivery log without sending anything, as if Apple had delivered `payload`
    /// to the webhook at `created_date` with outcome `state`: a test can fill the log with days of
    /// history cheaply.
    pub fn log_delivery(
        &self,
        webhook_id: &str,
        payload: &[u8],
        state: deliveries::DeliveryState,
        created_date: &str,
    ) -> MockDelivery {
        let n = self.shared.next_delivery.fetch_add(1, Ordering::Relaxed);
        let delivery = deliveries::logged(webhook_id, payload, state, created_date, n);
        lock(&self.shared.deliveries).push(delivery.clone());
        delivery
    }
}
