//! App Store Connect's delivery log of a webhook (`GET /v1/webhooks/{id}/deliveries?include=event`) and
//! redelivery (`POST /v1/webhookDeliveries`), read one page at a time so a caller can checkpoint after each
//! page and resume where a failure stopped it.

use super::webhooks::{WebhookError, Webhooks};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// Apple's largest page.
pub const MAX_PAGE: u32 = 200;

/// A delivery's outcome as Apple reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// The receiver answered 2xx.
    Succeeded,
    /// Anything else, or no answer.
    Failed,
    /// Not sent yet.
    Pending,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Succeeded => "SUCCEEDED",
            DeliveryState::Failed => "FAILED",
            DeliveryState::Pending => "PENDING",
        }
    }
}

/// Which deliveries to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only these states (empty: all).
    pub states: Vec<DeliveryState>,
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
            states: Vec::new(),
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
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            q.append_pair("filter[deliveryState]", &states.join(","));
        }
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
    /// Apple's event type.
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
    pub state: Option<DeliveryState>,
    /// Apple's reason for a failure.
    pub error_message: Option<String>,
    /// Whether it was itself a redelivery.
    pub redelivery: bool,
    /// The receiver's status code, if it answered.
    pub response_status: Option<u16>,
    /// The event, when included.
    pub event: Option<LoggedEvent>,
}

/// One page of the log and the next page's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    /// The deliveries, as Apple ordered them.
    pub deliveries: Vec<LoggedDelivery>,
    /// `links.next`, if there is more.
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryAttributes {
    created_date: Option<String>,
    delivery_state: Option<DeliveryState>,
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
    #[serde(default)]
    payload: String,
    #[serde(default)]
    ping: bool,
    created_date: Option<String>,
}

/// Parses a delivery-log page (pure).
pub fn parse_page(doc: &Value) -> Result<DeliveryPage, WebhookError> {
    let malformed = |e: serde_json::Error| WebhookError::Malformed(e.to_string());
    let events: Vec<LoggedEvent> = doc
        .get("included")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "webhookEvents")
        .map(|r| {
            let a: EventAttributes =
                serde_json::from_value(r["attributes"].clone()).map_err(malformed)?;
            Ok(LoggedEvent {
                id: r["id"].as_str().unwrap_or_default().to_owned(),
                event_type: a.event_type,
                payload: a.payload,
                ping: a.ping,
                created_date: a.created_date,
            })
        })
        .collect::<Result<_, WebhookError>>()?;
    let data = doc
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("no data list".into()))?;
    let deliveries = data
        .iter()
        .map(|r| {
            let a: DeliveryAttributes =
                serde_json::from_value(r["attributes"].clone()).map_err(malformed)?;
            let event_id = r
                .pointer("/relationships/event/data/id")
                .and_then(Value::as_str);
            Ok(LoggedDelivery {
                id: r["id"].as_str().unwrap_or_default().to_owned(),
                created_date: a.created_date,
                state: a.delivery_state,
                error_message: a.error_message,
                redelivery: a.redelivery,
                response_status: a.response.and_then(|r| r.http_status_code),
                event: event_id.and_then(|id| events.iter().find(|e| e.id == id).cloned()),
            })
        })
        .collect::<Result<_, WebhookError>>()?;
    Ok(DeliveryPage {
        deliveries,
        next: doc
            .pointer("/links/next")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
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
    fn the_first_page_asks_for_the_filter_with_events_included() {
        let f = DeliveryFilter {
            states: vec![DeliveryState::Failed, DeliveryState::Pending],
            created_since: Some("2026-12-01T10:00:00Z".into()),
            ..Default::default()
        };
        let path = f.first_page("wh-1");
        assert!(path.starts_with("/v1/webhooks/wh-1/deliveries?"), "{path}");
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(path.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        assert!(query.contains(&("filter[deliveryState]".into(), "FAILED,PENDING".into())));
        assert!(query.contains(&(
            "filter[createdDateGreaterThanOrEqualTo]".into(),
            "2026-12-01T10:00:00Z".into()
        )));
        assert!(query.contains(&("include".into(), "event".into())));
        assert!(query.contains(&("limit".into(), "200".into())));
    }

    #[test]
    fn a_page_joins_each_delivery_to_its_included_event() {
        let doc = json!({
            "data": [{"type": "webhookDeliveries", "id": "d1",
                "attributes": {"createdDate": "2026-12-01T10:00:00.000Z", "deliveryState": "FAILED",
                    "errorMessage": "timeout", "redelivery": false, "response": {"httpStatusCode": null}},
                "relationships": {"event": {"data": {"type": "webhookEvents", "id": "e1"}}}}],
            "included": [{"type": "webhookEvents", "id": "e1",
                "attributes": {"eventType": "buildUploadStateUpdated", "payload": "{\"data\":{}}", "ping": false}}],
            "links": {"next": "https://api.appstoreconnect.apple.com/v1/webhooks/w/deliveries?cursor=x"}
        });
        let page = parse_page(&doc).unwrap();
        let d = &page.deliveries[0];
        assert_eq!(d.state, Some(DeliveryState::Failed));
        assert_eq!(d.event.as_ref().unwrap().payload, "{\"data\":{}}");
        assert!(page.next.unwrap().contains("cursor=x"));
    }
}
