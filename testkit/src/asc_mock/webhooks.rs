//! The mock's stateful webhook configuration: `/v1/webhooks`, `/v1/apps/{id}/webhooks` and
//! `/v1/webhookPings`, with Apple's shapes, limits (10 webhooks per app, write-only secret, the app of a
//! webhook fixed) and error bodies.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{error, json_response};
use axum::response::Response;

/// Apple's limit of webhooks per app.
pub const MAX_PER_APP: usize = 10;

/// Every subscription name Apple accepts in `eventTypes`.
pub const EVENT_TYPES: &[&str] = &[
    "ALTERNATIVE_DISTRIBUTION_PACKAGE_AVAILABLE_UPDATED",
    "ALTERNATIVE_DISTRIBUTION_PACKAGE_VERSION_CREATED",
    "ALTERNATIVE_DISTRIBUTION_TERRITORY_AVAILABILITY_UPDATED",
    "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
    "BACKGROUND_ASSET_VERSION_APP_STORE_RELEASE_STATE_UPDATED",
    "BACKGROUND_ASSET_VERSION_EXTERNAL_BETA_RELEASE_STATE_UPDATED",
    "BACKGROUND_ASSET_VERSION_INTERNAL_BETA_RELEASE_CREATED",
    "BACKGROUND_ASSET_VERSION_STATE_UPDATED",
    "BETA_FEEDBACK_CRASH_SUBMISSION_CREATED",
    "BETA_FEEDBACK_SCREENSHOT_SUBMISSION_CREATED",
    "BUILD_BETA_DETAIL_EXTERNAL_BUILD_STATE_UPDATED",
    "BUILD_UPLOAD_STATE_UPDATED",
];

/// One webhook as the mock stores it (the secret included, which Apple never returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockWebhook {
    /// Its id.
    pub id: String,
    /// The app it belongs to.
    pub app_id: String,
    /// Name.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The current secret (events are signed with it).
    pub secret: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// Whether events are sent.
    pub enabled: bool,
}

impl MockWebhook {
    /// An enabled webhook of app `1234567890` (the fixture app) at `url`, subscribed to build uploads,
    /// with secret `s`; its id is given by [`AscMock::add_webhook`](super::AscMock::add_webhook).
    pub fn build_uploads_at(url: &str) -> Self {
        MockWebhook {
            id: String::new(),
            app_id: "1234567890".into(),
            name: "n".into(),
            url: url.into(),
            secret: "s".into(),
            event_types: vec!["BUILD_UPLOAD_STATE_UPDATED".into()],
            enabled: true,
        }
    }

    fn resource(&self) -> Value {
        json!({
            "type": "webhooks",
            "id": self.id,
            "attributes": {
                "enabled": self.enabled,
                "eventTypes": self.event_types,
                "name": self.name,
                "url": self.url,
            },
            "relationships": {"app": {"data": {"type": "apps", "id": self.app_id}}},
            "links": {"self": format!("https://api.appstoreconnect.apple.com/v1/webhooks/{}", self.id)},
        })
    }
}

/// What a handler decided, besides its answer: a ping to send once the answer is out.
pub(super) struct Handled {
    pub response: Response,
    pub ping: Option<String>,
}

fn answer(response: Response) -> Handled {
    Handled {
        response,
        ping: None,
    }
}

/// The mock's webhooks and the apps that exist.
#[derive(Debug)]
pub(super) struct State {
    pub apps: BTreeSet<String>,
    pub webhooks: BTreeMap<String, MockWebhook>,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            apps: BTreeSet::from(["1234567890".to_owned()]),
            webhooks: BTreeMap::new(),
            next_id: 1,
        }
    }
}

fn invalid(detail: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "ENTITY_ERROR.ATTRIBUTE.INVALID",
        "An attribute value is invalid.",
        detail,
    )
}

fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The specified resource does not exist",
        &format!("There is no resource of type '{what}' with id '{id}'"),
    )
}

fn document(status: StatusCode, data: Value) -> Response {
    json_response(
        status,
        Bytes::from(json!({"data": data, "links": {"self": ""}}).to_string()),
    )
}

/// Whether this module serves `path`.
pub(super) fn serves(path: &str) -> bool {
    path == "/v1/webhooks"
        || path.starts_with("/v1/webhooks/")
        || path == "/v1/webhookPings"
        || path == "/v1/webhookDeliveries"
        || (path.starts_with("/v1/apps/") && path.ends_with("/webhooks"))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The event types, or Apple's `detail` for an invalid value.
fn check_event_types(types: &Value) -> Result<Vec<String>, String> {
    let Some(list) = types.as_array() else {
        return Err("eventTypes must be an array".into());
    };
    let mut out = Vec::new();
    for t in list {
        match t.as_str() {
            Some(s) if EVENT_TYPES.contains(&s) => out.push(s.to_owned()),
            _ => {
                return Err(format!("'{t}' is not a valid value for eventTypes"));
            }
        }
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err("url must be an absolute http(s) URL".into())
    }
}

impl State {
    pub(super) fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
        base_url: &str,
    ) -> Handled {
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return answer(error(
                        StatusCode::BAD_REQUEST,
                        "PARAMETER_ERROR.INVALID",
                        "The request entity is not valid JSON.",
                        &e.to_string(),
                    ));
                }
            }
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::POST, ["v1", "webhooks"]) => answer(self.create(&body)),
            (Method::GET, ["v1", "webhooks", id]) => answer(match self.webhooks.get(*id) {
                Some(w) => document(StatusCode::OK, w.resource()),
                None => not_found("webhooks", id),
            }),
            (Method::PATCH, ["v1", "webhooks", id]) => answer(self.update(id, &body)),
            (Method::DELETE, ["v1", "webhooks", id]) => answer(match self.webhooks.remove(*id) {
                Some(_) => {
                    let mut r = Response::new(axum::body::Body::empty());
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                None => not_found("webhooks", id),
            }),
            (Method::GET, ["v1", "apps", app, "webhooks"]) => {
                answer(self.list(app, query, base_url))
            }
            (Method::POST, ["v1", "webhookPings"]) => {
                let id = body
                    .pointer("/data/relationships/webhook/data/id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if !self.webhooks.contains_key(&id) {
                    return answer(not_found("webhooks", &id));
                }
                let ping_id = format!("ping-{}", self.take_id());
                Handled {
                    response: document(
                        StatusCode::CREATED,
                        json!({"type": "webhookPings", "id": ping_id}),
                    ),
                    ping: Some(id),
                }
            }
            _ => answer(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "The request method is not valid for this resource.",
                "",
            )),
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn create(&mut self, body: &Value) -> Response {
        if body.pointer("/data/type").and_then(Value::as_str) != Some("webhooks") {
            return error(
                StatusCode::CONFLICT,
                "ENTITY_ERROR.INCLUDED.INVALID_TYPE",
                "The provided entity includes a type that is not valid.",
                "data.type must be 'webhooks'",
            );
        }
        let attrs = body
            .pointer("/data/attributes")
            .cloned()
            .unwrap_or(Value::Null);
        for required in ["name", "url", "secret", "eventTypes", "enabled"] {
            if attrs.get(required).is_none_or(Value::is_null) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ENTITY_ERROR.ATTRIBUTE.REQUIRED",
                    "You must provide a value for the attribute.",
                    &format!(
                        "You must provide a value for the attribute '{required}' with this request"
                    ),
                );
            }
        }
        let Some(app_id) = body
            .pointer("/data/relationships/app/data/id")
            .and_then(Value::as_str)
        else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ENTITY_ERROR.RELATIONSHIP.REQUIRED",
                "You must provide a value for the relationship.",
                "You must provide a value for the relationship 'app' with this request",
            );
        };
        if !self.apps.contains(app_id) {
            return not_found("apps", app_id);
        }
        let event_types = match check_event_types(&attrs["eventTypes"]) {
            Ok(t) => t,
            Err(detail) => return invalid(&detail),
        };
        let url = attrs["url"].as_str().unwrap_or_default().to_owned();
        if let Err(detail) = check_url(&url) {
            return invalid(&detail);
        }
        let of_app = self
            .webhooks
            .values()
            .filter(|w| w.app_id == app_id)
            .count();
        if of_app >= MAX_PER_APP {
            return error(
                StatusCode::CONFLICT,
                "ENTITY_ERROR.LIMIT_REACHED",
                "The maximum number of webhooks has been reached.",
                &format!("An app can have at most {MAX_PER_APP} webhooks."),
            );
        }
        if self
            .webhooks
            .values()
            .any(|w| w.app_id == app_id && w.url == url)
        {
            return error(
                StatusCode::CONFLICT,
                "ENTITY_ERROR.ATTRIBUTE.INVALID.DUPLICATE",
                "The provided entity has a duplicate value.",
                "A webhook with this url already exists for this app.",
            );
        }
        let id = format!("wh-{:04}", self.take_id());
        let webhook = MockWebhook {
            id: id.clone(),
            app_id: app_id.to_owned(),
            name: attrs["name"].as_str().unwrap_or_default().to_owned(),
            url,
            secret: attrs["secret"].as_str().unwrap_or_default().to_owned(),
            event_types,
            enabled: attrs["enabled"].as_bool().unwrap_or(true),
        };
        let resource = webhook.resource();
        self.webhooks.insert(id, webhook);
        document(StatusCode::CREATED, resource)
    }

    fn update(&mut self, id: &str, body: &Value) -> Response {
        if body.pointer("/data/id").and_then(Value::as_str) != Some(id) {
            return error(
                StatusCode::CONFLICT,
                "ENTITY_ERROR.ID.INVALID",
                "The provided entity id is invalid",
                "The resource id in the request body does not match the id in the URL",
            );
        }
        if body.pointer("/data/relationships/app").is_some() {
            return error(
                StatusCode::CONFLICT,
                "ENTITY_ERROR.RELATIONSHIP.INVALID",
                "The relationship cannot be changed.",
                "The app of a webhook cannot be changed",
            );
        }
        let attrs = body
            .pointer("/data/attributes")
            .cloned()
            .unwrap_or(json!({}));
        let event_types = match attrs.get("eventTypes") {
            Some(t) => match check_event_types(t) {
                Ok(t) => Some(t),
                Err(detail) => return invalid(&detail),
            },
            None => None,
        };
        if let Some(url) = attrs.get("url").and_then(Value::as_str)
            && let Err(detail) = check_url(url)
        {
            return invalid(&detail);
        }
        let Some(w) = self.webhooks.get_mut(id) else {
            return not_found("webhooks", id);
        };
        if let Some(v) = attrs.get("name").and_then(Value::as_str) {
            w.name = v.to_owned();
        }
        if let Some(v) = attrs.get("url").and_then(Value::as_str) {
            w.url = v.to_owned();
        }
        if let Some(v) = attrs.get("secret").and_then(Value::as_str) {
            w.secret = v.to_owned();
        }
        if let Some(v) = event_types {
            w.event_types = v;
        }
        if let Some(v) = attrs.get("enabled").and_then(Value::as_bool) {
            w.enabled = v;
        }
        document(StatusCode::OK, w.resource())
    }

    fn list(&self, app: &str, query: &str, base_url: &str) -> Response {
        if !self.apps.contains(app) {
            return not_found("apps", app);
        }
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(50)
            .clamp(1, 200);
        let start = query_param(query, "cursor")
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0);
        let all: Vec<&MockWebhook> = self.webhooks.values().filter(|w| w.app_id == app).collect();
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|w| w.resource())
            .collect();
        let mut links = json!({"self": format!("{base_url}/v1/apps/{app}/webhooks")});
        let mut paging = json!({"total": all.len(), "limit": limit});
        if start + limit < all.len() {
            let next = start + limit;
            links["next"] = json!(format!(
                "{base_url}/v1/apps/{app}/webhooks?cursor={next}&limit={limit}"
            ));
            paging["nextCursor"] = json!(next.to_string());
        }
        json_response(
            StatusCode::OK,
            Bytes::from(
                json!({"data": page, "links": links, "meta": {"paging": paging}}).to_string(),
            ),
        )
    }
}
