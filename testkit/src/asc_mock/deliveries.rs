//! Apple's side of a delivery: the mock signs an event with the webhook's current secret, POSTs it to the
//! webhook's URL and records the outcome in its delivery log, served like Apple's
//! `GET /v1/webhooks/{id}/deliveries` (filters, `include=event`, cursor paging).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use super::webhooks::MockWebhook;
use super::{error, json_response};
use axum::response::Response;

/// Outcome of one delivery, as Apple reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// The receiver answered 2xx.
    Succeeded,
    /// Any other answer, or no answer.
    Failed,
    /// Not sent yet.
    Pending,
}

impl DeliveryState {
    /// Apple's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Succeeded => "SUCCEEDED",
            DeliveryState::Failed => "FAILED",
            DeliveryState::Pending => "PENDING",
        }
    }
}

/// The event of a delivery (`webhookEvents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockEvent {
    /// Id of the `webhookEvents` resource.
    pub id: String,
    /// `data.type` of the payload.
    pub event_type: String,
    /// The original body, byte for byte.
    pub payload: String,
    /// Whether it is a test ping.
    pub ping: bool,
    /// When it was created (RFC 3339).
    pub created_date: String,
}

/// One entry of the delivery log (`webhookDeliveries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockDelivery {
    /// Its id.
    pub id: String,
    /// The webhook it went to.
    pub webhook_id: String,
    /// When it was created (RFC 3339).
    pub created_date: String,
    /// The outcome.
    pub state: DeliveryState,
    /// Why it failed, if it did.
    pub error_message: Option<String>,
    /// Whether it was a redelivery.
    pub redelivery: bool,
    /// Where it was POSTed.
    pub request_url: String,
    /// The receiver's status code, if it answered.
    pub response_status: Option<u16>,
    /// The receiver's body, if it answered.
    pub response_body: Option<String>,
    /// The event.
    pub event: MockEvent,
}

/// An event signed for one webhook, not sent yet: a test can sign with the current secret, rotate it, and
/// send afterwards, as a delivery in flight during a rotation would arrive.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    /// The webhook.
    pub webhook_id: String,
    /// Its URL when signed.
    pub url: String,
    /// The body.
    pub body: Vec<u8>,
    /// `x-apple-signature` value.
    pub signature: String,
}

/// `hmacsha256=<hex>` of `body` keyed with `secret`, as Apple signs.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("hmacsha256={hex}")
}

pub(super) fn signed(webhook: &MockWebhook, body: &[u8]) -> SignedEvent {
    SignedEvent {
        webhook_id: webhook.id.clone(),
        url: webhook.url.clone(),
        body: body.to_vec(),
        signature: sign(&webhook.secret, body),
    }
}

/// A `webhookPingCreated` body like Apple's.
pub(super) fn ping_payload(id: &str) -> Vec<u8> {
    json!({"data": {"type": "webhookPingCreated", "id": id, "version": 1,
        "attributes": {"timestamp": now()}}})
    .to_string()
    .into_bytes()
}

pub(super) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// POSTs `event` and returns what the log records.
pub(super) async fn post(
    client: &reqwest::Client,
    event: &SignedEvent,
    delivery_id: String,
    event_id: String,
) -> MockDelivery {
    let payload = String::from_utf8_lossy(&event.body).into_owned();
    let parsed: Value = serde_json::from_slice(&event.body).unwrap_or(Value::Null);
    let event_type = parsed
        .pointer("/data/type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let created = now();
    let answer = client
        .post(&event.url)
        .header("content-type", "application/json")
        .header("x-apple-signature", &event.signature)
        .header("x-apple-request-uuid", &delivery_id)
        .body(event.body.clone())
        .send()
        .await;
    let (state, error_message, response_status, response_body) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                (DeliveryState::Succeeded, None, Some(status), Some(body))
            } else {
                (
                    DeliveryState::Failed,
                    Some(format!("The endpoint answered HTTP {status}")),
                    Some(status),
                    Some(body),
                )
            }
        }
        Err(e) => (
            DeliveryState::Failed,
            Some(format!("The endpoint could not be reached: {e}")),
            None,
            None,
        ),
    };
    MockDelivery {
        id: delivery_id,
        webhook_id: event.webhook_id.clone(),
        created_date: created.clone(),
        state,
        error_message,
        redelivery: false,
        request_url: event.url.clone(),
        response_status,
        response_body,
        event: MockEvent {
            id: event_id,
            ping: event_type == "webhookPingCreated",
            event_type,
            payload,
            created_date: created,
        },
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn delivery_resource(d: &MockDelivery) -> Value {
    json!({
        "type": "webhookDeliveries",
        "id": d.id,
        "attributes": {
            "createdDate": d.created_date,
            "sentDate": d.created_date,
            "deliveryState": d.state.as_str(),
            "errorMessage": d.error_message,
            "redelivery": d.redelivery,
            "request": {"url": d.request_url},
            "response": {"httpStatusCode": d.response_status, "body": d.response_body},
        },
        "relationships": {"event": {"data": {"type": "webhookEvents", "id": d.event.id}}},
    })
}

fn event_resource(e: &MockEvent) -> Value {
    json!({
        "type": "webhookEvents",
        "id": e.id,
        "attributes": {
            "eventType": e.event_type,
            "payload": e.payload,
            "ping": e.ping,
            "createdDate": e.created_date,
        },
    })
}

/// `GET /v1/webhooks/{id}/deliveries` over `log` (oldest first).
pub(super) fn list(
    log: &[MockDelivery],
    webhook_exists: bool,
    webhook_id: &str,
    query: &str,
    base_url: &str,
) -> Response {
    if !webhook_exists {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The specified resource does not exist",
            &format!("There is no resource of type 'webhooks' with id '{webhook_id}'"),
        );
    }
    let states: Option<Vec<String>> = query_param(query, "filter[deliveryState]")
        .map(|s| s.split(',').map(str::to_owned).collect());
    let from = query_param(query, "filter[createdDateGreaterThanOrEqualTo]");
    let before = query_param(query, "filter[createdDateLessThan]");
    let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
    let include_event =
        query_param(query, "include").is_some_and(|i| i.split(',').any(|x| x == "event"));
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 200);
    let start = query_param(query, "cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let matching: Vec<&MockDelivery> = log
        .iter()
        .filter(|d| d.webhook_id == webhook_id)
        .filter(|d| {
            states
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == d.state.as_str()))
        })
        .filter(|d| {
            let at = parse(&d.created_date);
            from.as_deref()
                .and_then(parse)
                .is_none_or(|f| at.is_some_and(|a| a >= f))
                && before
                    .as_deref()
                    .and_then(parse)
                    .is_none_or(|b| at.is_some_and(|a| a < b))
        })
        .collect();
    let page: Vec<&MockDelivery> = matching.iter().skip(start).take(limit).copied().collect();
    let mut doc = json!({
        "data": page.iter().map(|d| delivery_resource(d)).collect::<Vec<_>>(),
        "links": {"self": format!("{base_url}/v1/webhooks/{webhook_id}/deliveries")},
        "meta": {"paging": {"total": matching.len(), "limit": limit}},
    });
    if include_event {
        doc["included"] = json!(
            page.iter()
                .map(|d| event_resource(&d.event))
                .collect::<Vec<_>>()
        );
    }
    if start + limit < matching.len() {
        let next = start + limit;
        let mut rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        rest.push(("cursor".into(), next.to_string()));
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(rest)
            .finish();
        doc["links"]["next"] = json!(format!(
            "{base_url}/v1/webhooks/{webhook_id}/deliveries?{q}"
        ));
        doc["meta"]["paging"]["nextCursor"] = json!(next.to_string());
    }
    json_response(StatusCode::OK, Bytes::from(doc.to_string()))
}
