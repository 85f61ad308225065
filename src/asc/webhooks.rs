//! Typed calls for App Store Connect's webhook configuration (`/v1/webhooks`, `/v1/apps/{id}/webhooks`,
//! `/v1/webhookPings`) on top of [`AscClient`], which keeps every call on the credential's API origin,
//! mints the tokens and retries with `Retry-After`.

use super::api::{ApiError, AscClient};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// Apple's limit of webhooks per app.
pub const MAX_WEBHOOKS_PER_APP: usize = 10;
/// Pages followed when listing an app's webhooks (10 webhooks fit one page; this only stops a loop).
const MAX_PAGES: usize = 20;

/// Every event type a webhook can subscribe to, as Apple spells subscription names.
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

/// The subscription name of an event type written either way (`buildUploadStateUpdated` or
/// `BUILD_UPLOAD_STATE_UPDATED`), if Apple lets webhooks subscribe to it.
pub fn subscription_name(event_type: &str) -> Option<&'static str> {
    let mut snake = String::with_capacity(event_type.len() + 8);
    for (i, c) in event_type.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 && !event_type.contains('_') {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
    EVENT_TYPES.iter().copied().find(|t| *t == snake)
}

/// A webhook's readable attributes (the secret is write-only and never returned).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttributes {
    /// Name shown in App Store Connect.
    #[serde(default)]
    pub name: String,
    /// Where events are sent.
    #[serde(default)]
    pub url: String,
    /// Subscription names.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Whether delivery is on.
    #[serde(default)]
    pub enabled: bool,
}

/// One webhook as App Store Connect returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Its attributes.
    pub attributes: WebhookAttributes,
}

/// Attributes to change; `None` leaves one as it is. The secret never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookChange {
    /// New name.
    pub name: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New secret.
    pub secret: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// New `enabled`.
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for WebhookChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChange")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl WebhookChange {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == WebhookChange::default()
    }

    /// Names of the attributes this change sends (for logs and Events; never the secret's value).
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("url", self.url.is_some()),
            ("secret", self.secret.is_some()),
            ("eventTypes", self.event_types.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect()
    }

    fn attributes(&self) -> Value {
        let mut a = serde_json::Map::new();
        if let Some(v) = &self.name {
            a.insert("name".into(), json!(v));
        }
        if let Some(v) = &self.url {
            a.insert("url".into(), json!(v));
        }
        if let Some(v) = &self.secret {
            a.insert("secret".into(), json!(v));
        }
        if let Some(v) = &self.event_types {
            a.insert("eventTypes".into(), json!(v));
        }
        if let Some(v) = self.enabled {
            a.insert("enabled".into(), json!(v));
        }
        Value::Object(a)
    }
}

/// What went wrong managing a webhook, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 401/403: the key may not manage webhooks.
    #[error(
        "App Store Connect refused the key: managing webhooks needs a key with the Account Holder, Admin or \
         App Manager role and access to the app"
    )]
    Forbidden(#[source] ApiError),
    /// Apple refused the token's scope while the key works unscoped.
    #[error("App Store Connect refused the scoped token")]
    TokenScopeRefused(#[source] ApiError),
    /// The app does not exist (or the key's team cannot see it).
    #[error(
        "App Store Connect has no app with Apple ID {app_id}, or the key's team cannot see it; check \
         spec.appStoreConnect.appId"
    )]
    AppNotFound {
        /// The app asked for.
        app_id: String,
        /// The 404.
        #[source]
        source: ApiError,
    },
    /// The webhook does not exist (deleted in App Store Connect).
    #[error("the webhook {id} no longer exists in App Store Connect")]
    WebhookNotFound {
        /// Its id.
        id: String,
    },
    /// The app already has the most webhooks Apple allows.
    #[error(
        "app {app_id} already has {MAX_WEBHOOKS_PER_APP} webhooks, Apple's limit; delete one in App Store \
         Connect (Users and Access → Integrations → Webhooks) or reuse it by giving it this route's URL"
    )]
    LimitReached {
        /// The app.
        app_id: String,
    },
    /// 400/409/422: App Store Connect refused the request; `detail` is its explanation.
    #[error("App Store Connect refused the webhook ({status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Apple's `detail` (or `code`/`title`).
        detail: String,
        /// The refusal.
        #[source]
        source: ApiError,
    },
    /// 429, 5xx, timeouts: try again later.
    #[error("App Store Connect is unavailable")]
    Unavailable(#[source] ApiError),
    /// The answer was not a webhook document.
    #[error("App Store Connect answered something that is not a webhook document: {0}")]
    Malformed(String),
    /// Anything else (token, origin, client).
    #[error("calling App Store Connect failed")]
    Other(#[source] ApiError),
}

impl WebhookError {
    /// Whether trying again later, without a change by a person, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WebhookError::Unavailable(_) | WebhookError::WebhookNotFound { .. }
        )
    }
}

fn limit_reached(e: &ApiError) -> bool {
    let ApiError::Status {
        apple: Some(apple), ..
    } = e
    else {
        return false;
    };
    let text = format!("{} {} {}", apple.code, apple.title, apple.detail).to_ascii_lowercase();
    text.contains("limit") || text.contains("maximum")
}

fn classify(e: ApiError, app_id: Option<&str>, webhook_id: Option<&str>) -> WebhookError {
    match &e {
        ApiError::TokenScopeRefused { .. } => WebhookError::TokenScopeRefused(e),
        ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => WebhookError::Forbidden(e),
        ApiError::NotFound { .. } => match (webhook_id, app_id) {
            (Some(id), _) => WebhookError::WebhookNotFound { id: id.to_owned() },
            (None, Some(app)) => WebhookError::AppNotFound {
                app_id: app.to_owned(),
                source: e,
            },
            (None, None) => WebhookError::Other(e),
        },
        ApiError::Status { status, .. } if (400..500).contains(status) && *status != 429 => {
            if let (true, Some(app)) = (limit_reached(&e), app_id) {
                return WebhookError::LimitReached {
                    app_id: app.to_owned(),
                };
            }
            let ApiError::Status {
                status,
                asc_message,
                apple,
                ..
            } = &e
            else {
                return WebhookError::Other(e);
            };
            let detail = apple
                .as_ref()
                .map(|a| a.detail.clone())
                .filter(|d| !d.is_empty())
                .or_else(|| asc_message.clone())
                .unwrap_or_else(|| "no detail given".into());
            WebhookError::Rejected {
                status: *status,
                detail,
                source: e,
            }
        }
        ApiError::Status { .. }
        | ApiError::GaveUp { .. }
        | ApiError::Transport { .. }
        | ApiError::TooLarge { .. } => WebhookError::Unavailable(e),
        _ => WebhookError::Other(e),
    }
}

/// Classifies an error of a call about one webhook (or one of its deliveries).
pub(crate) fn classify_for_webhook(e: ApiError, id: &str) -> WebhookError {
    classify(e, None, Some(id))
}

#[derive(Deserialize)]
struct Resource {
    id: String,
    #[serde(default)]
    attributes: WebhookAttributes,
}

fn one(doc: Value) -> Result<Webhook, WebhookError> {
    let r: Resource = serde_json::from_value(doc.get("data").cloned().unwrap_or(Value::Null))
        .map_err(|e| WebhookError::Malformed(e.to_string()))?;
    Ok(Webhook {
        id: r.id,
        attributes: r.attributes,
    })
}

/// Webhook calls for one credential.
pub struct Webhooks<'a> {
    client: &'a AscClient,
}

impl<'a> Webhooks<'a> {
    /// Webhook calls through `client`.
    pub fn new(client: &'a AscClient) -> Self {
        Webhooks { client }
    }

    /// The client the calls go through.
    pub(crate) fn client(&self) -> &AscClient {
        self.client
    }

    /// `POST /v1/webhooks`.
    pub async fn create(
        &self,
        app_id: &str,
        attributes: &WebhookAttributes,
        secret: &str,
    ) -> Result<Webhook, WebhookError> {
        let body = json!({"data": {
            "type": "webhooks",
            "attributes": {
                "name": attributes.name,
                "url": attributes.url,
                "secret": secret,
                "eventTypes": attributes.event_types,
                "enabled": attributes.enabled,
            },
            "relationships": {"app": {"data": {"type": "apps", "id": app_id}}},
        }});
        let doc = self
            .client
            .send_json(Method::POST, "/v1/webhooks", Some(&body))
            .await
            .map_err(|e| classify(e, Some(app_id), None))?;
        one(doc)
    }

    /// `GET /v1/webhooks/{id}`; `None` when it does not exist.
    pub async fn get(&self, id: &str) -> Result<Option<Webhook>, WebhookError> {
        match self
            .client
            .get_json(&format!("/v1/webhooks/{}", path_segment(id)))
            .await
        {
            Ok(doc) => one(doc).map(Some),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify(e, None, Some(id))),
        }
    }

    /// `PATCH /v1/webhooks/{id}` with only the attributes in `change`.
    pub async fn update(&self, id: &str, change: &WebhookChange) -> Result<Webhook, WebhookError> {
        let body =
            json!({"data": {"type": "webhooks", "id": id, "attributes": change.attributes()}});
        let doc = self
            .client
            .send_json(
                Method::PATCH,
                &format!("/v1/webhooks/{}", path_segment(id)),
                Some(&body),
            )
            .await
            .map_err(|e| classify(e, None, Some(id)))?;
        one(doc)
    }

    /// `DELETE /v1/webhooks/{id}`; `Ok(false)` when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, WebhookError> {
        match self
            .client
            .send_json(
                Method::DELETE,
                &format!("/v1/webhooks/{}", path_segment(id)),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(classify(e, None, Some(id))),
        }
    }

    /// Every webhook of the app (`GET /v1/apps/{id}/webhooks`, following `links.next`).
    pub async fn list_for_app(&self, app_id: &str) -> Result<Vec<Webhook>, WebhookError> {
        let mut out = Vec::new();
        let mut next = Some(format!(
            "/v1/apps/{}/webhooks?limit=200",
            path_segment(app_id)
        ));
        for _ in 0..MAX_PAGES {
            let Some(page) = next.take() else { break };
            let doc = self
                .client
                .get_json(&page)
                .await
                .map_err(|e| classify(e, Some(app_id), None))?;
            let items: Vec<Resource> =
                serde_json::from_value(doc.get("data").cloned().unwrap_or(Value::Null))
                    .map_err(|e| WebhookError::Malformed(e.to_string()))?;
            out.extend(items.into_iter().map(|r| Webhook {
                id: r.id,
                attributes: r.attributes,
            }));
            // An absolute URL; `get_json` refuses it unless it is on the API origin.
            next = doc
                .pointer("/links/next")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        Ok(out)
    }

    /// `POST /v1/webhookPings`: App Store Connect sends a signed `webhookPingCreated` to the webhook.
    pub async fn ping(&self, id: &str) -> Result<(), WebhookError> {
        let body = json!({"data": {
            "type": "webhookPings",
            "relationships": {"webhook": {"data": {"type": "webhooks", "id": id}}},
        }});
        self.client
            .send_json(Method::POST, "/v1/webhookPings", Some(&body))
            .await
            .map(drop)
            .map_err(|e| classify(e, None, Some(id)))
    }
}

/// Ids come from status (written by us) and spec (validated digits), but a path segment is escaped
/// anyway so no value can add a path or query.
fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests;
