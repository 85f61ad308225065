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
            return deliveries::list(&lock(&self.deliveries), exists, id, query, &base);
        }
        let handled = lock(&self.webhooks).handle(method, path, query, body, &base);
        if let Some(webhook_id) = handled.ping {
            // Apple answers the ping request first and delivers the ping on its own schedule.
            let shared = self.clone();
            tokio::spawn(async move {
                // Every ping is a new event (its own id), as each of Apple's pings is.
                let id = format!(
                    "ping-{:06}",
                    shared.next_delivery.fetch_add(1, Ordering::Relaxed)
                );
                shared
                    .send(&webhook_id, &deliveries::ping_payload(&id), true)
                    .await;
            });
        }
        handled.response
    }

    fn sign(&self, webhook_id: &str, body: &[u8]) -> Option<SignedEvent> {
        let hooks = lock(&self.webhooks);
        let w = hooks.webhooks.get(webhook_id)?;
        Some(deliveries::signed(w, body))
    }

    async fn deliver(&self, event: &SignedEvent) -> MockDelivery {
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let delivery = deliveries::post(
            &self.sender,
            event,
            format!("delivery-{n:06}"),
            format!("event-{n:06}"),
        )
        .await;
        lock(&self.deliveries).push(delivery.clone());
        delivery
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
    let mut snake = String::new();
    for (i, c) in t.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
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

    /// The delivery log, oldest first.
    pub fn deliveries(&self) -> Vec<MockDelivery> {
        lock(&self.shared.deliveries).clone()
    }
}
