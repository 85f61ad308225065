//! App Store Connect's delivery log of a webhook (`GET /v1/webhooks/{id}/deliveries?include=event`) and
//! redelivery (`POST /v1/webhookDeliveries`), read one page at a time.
//!
//! What the live log accepts is narrower than Apple's OpenAPI description: `filter[deliveryState]` is
//! refused, a `createdDate` window must start within about ten days, and no order is documented. So the
//! query carries only a `createdDate` window, the caller selects states itself, and one entry Apple sends
//! that this client does not understand is skipped on its own instead of failing the whole page.

use std::collections::HashMap;

use super::webhooks::{WebhookError, Webhooks};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// Apple's largest page.
pub const MAX_PAGE: u32 = 200;

/// A delivery's outcome as Apple reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// The receiver answered 2xx.
    Succeeded,
    /// Anything else, or no answer.
    Failed,
    /// Not sent yet.
    Pending,
}

impl DeliveryState {
    /// Apple's spelling, or `None` for a state this client does not know.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SUCCEEDED" => Some(DeliveryState::Succeeded),
            "FAILED" => Some(DeliveryState::Failed),
            "PENDING" => Some(DeliveryState::Pending),
            _ => None,
        }
    }

    /// Whether the event may not have reached the receiver, so catch-up has to look at it.
    pub fn undelivered(self) -> bool {
        matches!(self, DeliveryState::Failed | DeliveryState::Pending)
    }
}

/// Which deliveries to list: a `createdDate` window (Apple refuses a state filter on the live API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only deliveries created at or after this time (RFC 3339).
    pub created_since: Option<String>,
    /// Only deliveries created before this time (RFC 3339).
    pub created_before: Option<String>,
    /// Page size, at most [`MAX_PAGE`].
    pub limit: u32,
}

impl Default for DeliveryFilter {
    fn default() -> Self {
        DeliveryFilter {
            created_since: None,
            created_before: None,
            limit: MAX_PAGE,
        }
    }
}

impl DeliveryFilter {
    /// The first page's path and query, with the event of each delivery included.
    pub fn first_page(&self, webhook_id: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &self.created_since {
            q.append_pair("filter[createdDateGreaterThanOrEqualTo]", t);
        }
        if let Some(t) = &self.created_before {
            q.append_pair("filter[createdDateLessThan]", t);
        }
        q.append_pair("include", "event");
        q.append_pair("limit", &self.limit.clamp(1, MAX_PAGE).to_string());
        let id: String = url::form_urlencoded::byte_serialize(webhook_id.as_bytes()).collect();
        format!("/v1/webhooks/{id}/deliveries?{}", q.finish())
    }
}

/// The event a delivery carried (`webhookEvents`), with the original payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Id of the `webhookEvents` resource.
    pub id: String,
    /// Apple's event type (the subscription spelling, e.g. `BUILD_UPLOAD_STATE_UPDATED`).
    pub event_type: String,
    /// The body Apple sent, byte for byte.
    pub payload: String,
    /// Whether it was a test ping.
    pub ping: bool,
    /// When Apple created it.
    pub created_date: Option<String>,
}

/// One entry of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDelivery {
    /// Its id (a redelivery template).
    pub id: String,
    /// When Apple created it.
    pub created_date: Option<String>,
    /// Its outcome.
    pub state: DeliveryState,
    /// Apple's reason for a failure.
    pub error_message: Option<String>,
    /// Whether it was itself a redelivery.
    pub redelivery: bool,
    /// The receiver's status code, if it answered.
    pub response_status: Option<u16>,
    /// The event it carried.
    pub event: LoggedEvent,
}

/// Why one entry of a page was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A `deliveryState` this client does not know (or none).
    UnknownState,
    /// A field of the wrong type (e.g. `null` where a string or bool belongs).
    Malformed,
    /// The delivery's event was not included.
    MissingEvent,
}

impl SkipReason {
    /// The metric's reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnknownState => "unknown_state",
            SkipReason::Malformed => "malformed",
            SkipReason::MissingEvent => "missing_event",
        }
    }
}

/// An entry left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The delivery's id, as far as it could be read.
    pub id: String,
    /// The kind of problem.
    pub reason: SkipReason,
    /// What exactly was wrong, for the log.
    pub detail: String,
}

/// One page of the log and the next page's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    /// The entries understood, as Apple ordered them.
    pub deliveries: Vec<LoggedDelivery>,
    /// The entries left out.
    pub skipped: Vec<SkippedEntry>,
    /// `links.next`, if there is more.
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryAttributes {
    created_date: Option<String>,
    delivery_state: Option<String>,
    error_message: Option<String>,
    #[serde(default)]
    redelivery: bool,
    response: Option<ResponseAttributes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseAttributes {
    http_status_code: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventAttributes {
    #[serde(default)]
    event_type: String,
    payload: String,
    #[serde(default)]
    ping: bool,
    created_date: Option<String>,
}

/// The included events by id; an event that does not parse keeps why, for the delivery that names it.
fn included_events(doc: &Value) -> HashMap<String, Result<LoggedEvent, String>> {
    let resources = doc.get("included").and_then(Value::as_array);
    resources
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "webhookEvents")
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let event = serde_json::from_value::<EventAttributes>(r["attributes"].clone())
                .map(|a| LoggedEvent {
                    id: id.clone(),
                    event_type: a.event_type,
                    payload: a.payload,
                    ping: a.ping,
                    created_date: a.created_date,
                })
                .map_err(|e| format!("event {id}: {e}"));
            (id, event)
        })
        .collect()
}

/// One `webhookDeliveries` resource joined to its event, or why it is left out. Pure.
fn parse_entry(
    r: &Value,
    events: &HashMap<String, Result<LoggedEvent, String>>,
) -> Result<LoggedDelivery, SkippedEntry> {
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    let skip = |reason, detail: String| SkippedEntry {
        id: id.clone(),
        reason,
        detail,
    };
    let a: DeliveryAttributes = serde_json::from_value(r["attributes"].clone())
        .map_err(|e| skip(SkipReason::Malformed, e.to_string()))?;
    let raw_state = a.delivery_state.unwrap_or_default();
    let state = DeliveryState::parse(&raw_state).ok_or_else(|| {
        skip(
            SkipReason::UnknownState,
            format!("deliveryState {raw_state:?}"),
        )
    })?;
    let event_id = r
        .pointer("/relationships/event/data/id")
        .and_then(Value::as_str)
        .ok_or_else(|| skip(SkipReason::MissingEvent, "no event relationship".into()))?;
    let event = match events.get(event_id) {
        Some(Ok(e)) => e.clone(),
        Some(Err(why)) => return Err(skip(SkipReason::Malformed, why.clone())),
        None => {
            let why = format!("event {event_id} was not included");
            return Err(skip(SkipReason::MissingEvent, why));
        }
    };
    Ok(LoggedDelivery {
        id: id.clone(),
        created_date: a.created_date,
        state,
        error_message: a.error_message,
        redelivery: a.redelivery,
        response_status: a.response.and_then(|r| r.http_status_code),
        event,
    })
}

/// Parses a delivery-log page (pure). Only a page that is not a list at all is `Malformed`.
pub fn parse_page(doc: &Value) -> Result<DeliveryPage, WebhookError> {
    let data = doc
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("no data list".into()))?;
    let events = included_events(doc);
    let mut page = DeliveryPage {
        deliveries: Vec::new(),
        skipped: Vec::new(),
        next: doc
            .pointer("/links/next")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    for r in data {
        match parse_entry(r, &events) {
            Ok(d) => page.deliveries.push(d),
            Err(s) => page.skipped.push(s),
        }
    }
    Ok(page)
}

impl Webhooks<'_> {
    /// One page of the webhook's delivery log: the first (`page: None`) for `filter`, or the `next` URL of
    /// an earlier page (checked against the API origin like every call).
    pub async fn deliveries_page(
        &self,
        webhook_id: &str,
        filter: &DeliveryFilter,
        page: Option<&str>,
    ) -> Result<DeliveryPage, WebhookError> {
        let path = page.map_or_else(|| filter.first_page(webhook_id), str::to_owned);
        let doc = self
            .client()
            .get_json(&path)
            .await
            .map_err(|e| super::webhooks::classify_for_webhook(e, webhook_id))?;
        parse_page(&doc)
    }

    /// Asks Apple to send an earlier delivery again (signed anew); answers the new delivery's id.
    pub async fn redeliver(&self, template_delivery_id: &str) -> Result<String, WebhookError> {
        let body = json!({"data": {
            "type": "webhookDeliveries",
            "relationships": {"template": {"data": {"type": "webhookDeliveries", "id": template_delivery_id}}},
        }});
        let doc = self
            .client()
            .send_json(Method::POST, "/v1/webhookDeliveries", Some(&body))
            .await
            .map_err(|e| super::webhooks::classify_for_webhook(e, template_delivery_id))?;
        Ok(doc
            .pointer("/data/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_page_asks_for_a_created_date_window_with_events_and_no_state_filter() {
        let f = DeliveryFilter {
            created_since: Some("2026-12-01T10:00:00Z".into()),
            created_before: Some("2026-12-02T10:00:00Z".into()),
            ..Default::default()
        };
        let path = f.first_page("wh-1");
        assert!(path.starts_with("/v1/webhooks/wh-1/deliveries?"), "{path}");
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(path.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        assert!(
            query.iter().all(|(k, _)| k != "filter[deliveryState]"),
            "{query:?}"
        );
        assert!(query.contains(&(
            "filter[createdDateGreaterThanOrEqualTo]".into(),
            "2026-12-01T10:00:00Z".into()
        )));
        assert!(query.contains(&(
            "filter[createdDateLessThan]".into(),
            "2026-12-02T10:00:00Z".into()
        )));
        assert!(query.contains(&("include".into(), "event".into())));
        assert!(query.contains(&("limit".into(), "200".into())));
    }

    fn entry(id: &str, state: Value, event: &str) -> Value {
        json!({"type": "webhookDeliveries", "id": id,
            "attributes": {"createdDate": "2026-12-01T10:00:00.000Z", "deliveryState": state,
                "errorMessage": "timeout", "redelivery": false, "response": {"httpStatusCode": null}},
            "relationships": {"event": {"data": {"type": "webhookEvents", "id": event}}}})
    }

    fn event(id: &str) -> Value {
        json!({"type": "webhookEvents", "id": id, "attributes": {
            "eventType": "BUILD_UPLOAD_STATE_UPDATED", "payload": "{\"data\":{}}", "ping": false}})
    }

    #[test]
    fn a_page_joins_each_delivery_to_its_included_event() {
        let doc = json!({
            "data": [entry("d1", json!("FAILED"), "e1")],
            "included": [event("e1")],
            "links": {"next": "https://api.appstoreconnect.apple.com/v1/webhooks/w/deliveries?cursor=x"}
        });
        let page = parse_page(&doc).unwrap();
        let d = &page.deliveries[0];
        assert_eq!(d.state, DeliveryState::Failed);
        assert_eq!(d.event.payload, "{\"data\":{}}");
        assert_eq!(d.event.event_type, "BUILD_UPLOAD_STATE_UPDATED");
        assert!(page.skipped.is_empty());
        assert!(page.next.unwrap().contains("cursor=x"));
    }

    #[test]
    fn an_entry_the_client_does_not_understand_is_skipped_alone_with_its_reason() {
        let mut null_bool = entry("d4", json!("FAILED"), "e4");
        null_bool["attributes"]["redelivery"] = Value::Null;
        let mut null_ping = event("e5");
        null_ping["attributes"]["ping"] = Value::Null;
        let doc = json!({
            "data": [
                entry("d1", json!("FAILED"), "e1"),
                entry("d2", json!("RETRYING"), "e1"),
                entry("d3", json!("PENDING"), "gone"),
                null_bool,
                entry("d5", json!("FAILED"), "e5"),
                entry("d6", Value::Null, "e1"),
            ],
            "included": [event("e1"), event("e4"), null_ping],
        });
        let page = parse_page(&doc).unwrap();
        assert_eq!(page.deliveries.len(), 1, "{page:?}");
        assert_eq!(page.deliveries[0].id, "d1");
        let reasons: Vec<(&str, &str)> = page
            .skipped
            .iter()
            .map(|s| (s.id.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("d2", "unknown_state"),
                ("d3", "missing_event"),
                ("d4", "malformed"),
                ("d5", "malformed"),
                ("d6", "unknown_state"),
            ]
        );
        assert!(
            parse_page(&json!({"data": null})).is_err(),
            "not a page at all"
        );
    }
}
