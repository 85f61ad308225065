//! Apple's side of a delivery: the mock signs an event with the webhook's current secret, POSTs it to the
//! webhook's URL and records the outcome in its delivery log, served like Apple's
//! `GET /v1/webhooks/{id}/deliveries` (`createdDate` filters, `include=event`, cursor paging).
//!
//! The log refuses what the live API refuses, with Apple's 400 error body: `filter[deliveryState]`
//! (published in the OpenAPI description, rejected live) and a window starting more than ten days back.
//! Apple documents no order, so the mock serves oldest-first or newest-first, as a test chooses.

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

/// The order the delivery log is served in (Apple documents none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOrder {
    /// Oldest `createdDate` first.
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// How far back a window may start before Apple refuses it.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(10 * 86_400);

/// A payload's `data.type` (`buildUploadStateUpdated`) in Apple's subscription spelling
/// (`BUILD_UPLOAD_STATE_UPDATED`), the spelling of `eventType` in the log's `webhookEvents`.
pub fn screaming(data_type: &str) -> String {
    let mut out = String::new();
    for (i, c) in data_type.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The event of a delivery (`webhookEvents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockEvent {
    /// Id of the `webhookEvents` resource.
    pub id: String,
    /// `data.type` of the payload (served as `eventType` in the subscription spelling).
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

/// A log entry for `payload`, as [`post`] would record it, without sending anything.
pub(super) fn logged(
    webhook_id: &str,
    payload: &[u8],
    state: DeliveryState,
    created_date: &str,
    n: u64,
) -> MockDelivery {
    let text = String::from_utf8_lossy(payload).into_owned();
    let event_type = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.pointer("/data/type")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let answered = state == DeliveryState::Succeeded;
    MockDelivery {
        id: format!("delivery-{n:06}"),
        webhook_id: webhook_id.to_owned(),
        created_date: created_date.to_owned(),
        state,
        error_message: (!answered).then(|| "The endpoint could not be reached".to_owned()),
        redelivery: false,
        request_url: String::new(),
        response_status: answered.then_some(200),
        response_body: None,
        event: MockEvent {
            id: format!("event-{n:06}"),
            ping: event_type == "webhookPingCreated",
            event_type,
            payload: text,
            created_date: created_date.to_owned(),
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
            "eventType": screaming(&e.event_type),
            "payload": e.payload,
            "ping": e.ping,
            "createdDate": e.created_date,
        },
    })
}

/// Apple's 400 for a query parameter it does not accept.
fn bad_parameter(parameter: &str, detail: &str) -> Response {
    let body = json!({"errors": [{
        "id": "mock-400",
        "status": "400",
        "code": "PARAMETER_ERROR.INVALID",
        "title": "A parameter has an invalid value",
        "detail": detail,
        "source": {"parameter": parameter},
    }]});
    json_response(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
}

/// What Apple refuses in a delivery-log query, as its 400 answer.
fn refused(query: &str) -> Option<Response> {
    let state = "filter[deliveryState]";
    if query_param(query, state).is_some() {
        return Some(bad_parameter(
            state,
            &format!("'{state}' is not a valid filter type"),
        ));
    }
    let from = "filter[createdDateGreaterThanOrEqualTo]";
    let oldest = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(RETENTION).ok()?)
        .ok()?;
    let start = query_param(query, from)?;
    match start.parse::<jiff::Timestamp>() {
        Ok(t) if t >= oldest => None,
        Ok(_) => Some(bad_parameter(
            from,
            &format!("'{start}' is more than 10 days ago; deliveries are kept for 10 days"),
        )),
        Err(_) => Some(bad_parameter(
            from,
            &format!("'{start}' is not a valid date"),
        )),
    }
}

/// `GET /v1/webhooks/{id}/deliveries` over `log` (kept oldest first), served in `order`.
pub(super) fn list(
    log: &[MockDelivery],
    webhook_exists: bool,
    webhook_id: &str,
    query: &str,
    base_url: &str,
    order: LogOrder,
) -> Response {
    if !webhook_exists {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The specified resource does not exist",
            &format!("There is no resource of type 'webhooks' with id '{webhook_id}'"),
        );
    }
    if let Some(response) = refused(query) {
        return response;
    }
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
    let mut matching: Vec<&MockDelivery> = log
        .iter()
        .filter(|d| d.webhook_id == webhook_id)
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
    matching.sort_by_key(|d| parse(&d.created_date));
    if order == LogOrder::NewestFirst {
        matching.reverse();
    }
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
