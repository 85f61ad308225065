//! The HTTP action: a request built from the rule, the URL and headers from the user's Secrets, and the
//! rendered body; sent once per attempt. Retrying is the delivery controller's job, so every attempt is
//! recorded in the delivery's status and survives a restart.
//!
//! Errors and statuses never carry the URL (a Slack webhook URL is itself a secret) or the response body.
//! Redirects are not followed: the request reaches the URL from the Secret and nothing else, and
//! [`super::egress`] keeps it off loopback, link-local and metadata addresses.

use super::EventContext;
use super::egress::{self, DenyList, GuardedResolver};
use super::template::{self, TemplateError};
use crate::resources::route::HttpAction;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default attempts before an HTTP action fails for good.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Why an HTTP action cannot be prepared. Retrying does not help with any of these.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The URL in the Secret is not an http(s) URL.
    #[error("the URL in Secret {secret} is not a valid http(s) URL")]
    InvalidUrl {
        /// `name/key` of the Secret holding it.
        secret: String,
    },
    /// A header from the headers Secret is not a valid header.
    #[error("header {0:?} from the headers Secret is not a valid HTTP header")]
    InvalidHeader(String),
    /// The method is not one the action supports.
    #[error("unsupported method {0}")]
    Method(String),
    /// The body template did not render.
    #[error("body template: {0}")]
    Template(#[from] TemplateError),
}

/// A request ready to send. Its Debug output hides the URL and header values.
pub struct PreparedRequest {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PreparedRequest {
    /// The rendered body, for tests and dry runs.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// The maximum number of attempts configured for `action`.
pub fn max_attempts(action: &HttpAction) -> i32 {
    action.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1)
}

/// Builds the request for `action` from the URL and headers read from Secrets.
pub fn prepare(
    action: &HttpAction,
    url: &str,
    headers: &BTreeMap<String, String>,
    ctx: &EventContext<'_>,
) -> Result<PreparedRequest, PrepareError> {
    let secret = format!(
        "{}/{}",
        action.url_secret_ref.name, action.url_secret_ref.key
    );
    let url = reqwest::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or(PrepareError::InvalidUrl { secret })?;
    let method_name = action.method.as_deref().unwrap_or("POST");
    let method = reqwest::Method::from_bytes(method_name.as_bytes())
        .ok()
        .filter(|m| matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE"))
        .ok_or_else(|| PrepareError::Method(method_name.to_owned()))?;
    let content_type = action
        .content_type
        .as_deref()
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| PrepareError::InvalidHeader(name.clone()))?;
        let v = HeaderValue::from_str(value.trim())
            .map_err(|_| PrepareError::InvalidHeader(name.clone()))?;
        header_map.insert(n, v);
    }
    let body = match &action.body {
        Some(t) => {
            let ct = HeaderValue::from_str(content_type)
                .map_err(|_| PrepareError::InvalidHeader("content-type".into()))?;
            header_map.insert(reqwest::header::CONTENT_TYPE, ct);
            Some(template::render(
                t,
                &ctx.template_values(),
                template::is_json(content_type),
            )?)
        }
        None => None,
    };
    let timeout = action
        .timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    Ok(PreparedRequest {
        method,
        url,
        headers: header_map,
        body,
        timeout,
    })
}

/// What one attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Succeeded {
        /// The status code.
        status: u16,
    },
    /// Worth another attempt: 5xx, 429, 408, a timeout or a connection error.
    Retryable {
        /// The status code, when a response arrived.
        status: Option<u16>,
        /// A short description without URL or body.
        error: String,
        /// The server's `Retry-After`, in seconds (an HTTP-date is counted from now). The delivery
        /// controller waits at least this long, within `--retry-max-delay`.
        retry_after: Option<u64>,
    },
    /// Another attempt would get the same answer (other 4xx, 3xx).
    Permanent {
        /// The status code.
        status: u16,
        /// A short description.
        error: String,
    },
    /// Not sent: the destination is an address HTTP actions may not reach. Never retried.
    Denied {
        /// Naming the address, never the URL (recorded with reason `EgressDenied`).
        error: String,
    },
}

/// The client HTTP actions are sent with, and the deny list its resolver applies.
#[derive(Debug, Clone)]
pub struct ActionHttp {
    client: reqwest::Client,
    deny: Arc<DenyList>,
}

/// A client for HTTP actions: no redirects, rustls, no proxies from the environment (a proxy would
/// connect on our behalf, out of the resolver's sight), and every resolved address checked against `deny`.
pub fn client(deny: DenyList) -> Result<ActionHttp, reqwest::Error> {
    let deny = Arc::new(deny);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(deny.clone())))
        .user_agent(crate::resources::names::USER_AGENT)
        .build()?;
    Ok(ActionHttp { client, deny })
}

/// Sends the request once.
pub async fn send(http: &ActionHttp, request: &PreparedRequest) -> AttemptOutcome {
    // Literal addresses never reach the resolver.
    if let Err(denied) = http.deny.check_url(&request.url) {
        return AttemptOutcome::Denied {
            error: denied.to_string(),
        };
    }
    let mut builder = http
        .client
        .request(request.method.clone(), request.url.clone())
        .headers(request.headers.clone())
        .timeout(request.timeout);
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    match builder.send().await {
        Ok(response) => classify(response.status().as_u16(), retry_after(response.headers())),
        Err(e) => match egress::denial_in(&e) {
            Some(denied) => AttemptOutcome::Denied {
                error: denied.to_string(),
            },
            None => AttemptOutcome::Retryable {
                status: None,
                error: describe(&e),
                retry_after: None,
            },
        },
    }
}

/// `Retry-After` in whole seconds (rounded up), from either form ([`crate::retry`]).
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    crate::retry::retry_after(headers).map(crate::retry::whole_seconds)
}

/// Maps a status code to what to do next.
pub fn classify(status: u16, retry_after: Option<u64>) -> AttemptOutcome {
    match status {
        200..=299 => AttemptOutcome::Succeeded { status },
        408 | 429 | 500..=599 => AttemptOutcome::Retryable {
            status: Some(status),
            error: format!("endpoint answered {status}"),
            retry_after,
        },
        _ => AttemptOutcome::Permanent {
            status,
            error: format!("endpoint answered {status}"),
        },
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // reqwest's own Display includes the URL, a secret: describe the cause only, and drop even that if it
    // quotes a URL.
    let detail = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if detail.is_empty() || detail.contains("://") {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::context::tests::{delivery, enrichment};
    use crate::resources::SecretKeySelector;

    fn action(body: Option<&str>) -> HttpAction {
        HttpAction {
            url_secret_ref: SecretKeySelector {
                name: "slack".into(),
                key: "url".into(),
                namespace: None,
            },
            method: None,
            headers_secret_ref: None,
            body: body.map(str::to_owned),
            content_type: None,
            timeout_seconds: Some(3),
            max_attempts: None,
        }
    }

    #[test]
    fn slack_body_carries_apples_error_text() {
        let d = delivery("build-upload-failed");
        let e = enrichment("buildUploads-9d0e4b12-5c3a-4f8e-b7a6-2e1f0c9d8a55");
        let ctx = EventContext {
            delivery: &d,
            enrichment: Some(&e),
        };
        let a = action(Some(
            r#"{"text": "Build {{ instance.version }} ({{ instance.buildNumber }}) {{ event.newState }}: {{ instance.errorsText }}"}"#,
        ));
        let req = prepare(
            &a,
            "https://hooks.slack.example/T/B/x",
            &BTreeMap::new(),
            &ctx,
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(req.body().unwrap()).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.starts_with("Build 1.101.0 (3) FAILED: ITMS-90683: Missing purpose string"),
            "{text}"
        );
        assert_eq!(req.timeout, Duration::from_secs(3));
        assert_eq!(
            req.headers[reqwest::header::CONTENT_TYPE],
            "application/json"
        );
    }

    #[test]
    fn bad_urls_and_headers_are_refused_without_echoing_them() {
        let d = delivery("build-upload-failed");
        let ctx = EventContext {
            delivery: &d,
            enrichment: None,
        };
        let err = prepare(
            &action(None),
            "ftp://secret-token@host/x",
            &BTreeMap::new(),
            &ctx,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("secret-token"), "{err}");
        let headers = BTreeMap::from([("bad header".to_owned(), "v".to_owned())]);
        assert!(matches!(
            prepare(&action(None), "https://h/x", &headers, &ctx),
            Err(PrepareError::InvalidHeader(_))
        ));
    }

    #[test]
    fn debug_output_hides_url_path_and_header_values() {
        let d = delivery("build-upload-failed");
        let ctx = EventContext {
            delivery: &d,
            enrichment: None,
        };
        let headers = BTreeMap::from([("Authorization".to_owned(), "Bearer s3cr3t".to_owned())]);
        let req = prepare(
            &action(None),
            "https://hooks.example/T0/B0/s3cr3tpath",
            &headers,
            &ctx,
        )
        .unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[tokio::test]
    async fn loopback_metadata_and_names_resolving_to_loopback_are_denied_before_sending() {
        let d = delivery("build-upload-failed");
        let ctx = EventContext {
            delivery: &d,
            enrichment: None,
        };
        let guarded =
            client(egress::parse_deny_cidrs(egress::DEFAULT_DENY_CIDRS).unwrap()).unwrap();
        for url in [
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:9/x",
            "http://[::ffff:127.0.0.1]:9/x",
        ] {
            let req = prepare(&action(None), url, &BTreeMap::new(), &ctx).unwrap();
            match send(&guarded, &req).await {
                AttemptOutcome::Denied { error } => {
                    assert!(error.contains("--http-action-deny-cidrs"), "{error}");
                    assert!(!error.contains("/x"), "the URL stays out: {error}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_errors_and_throttling_are_retried_client_errors_are_not() {
        assert_eq!(
            classify(204, None),
            AttemptOutcome::Succeeded { status: 204 }
        );
        assert!(matches!(
            classify(500, None),
            AttemptOutcome::Retryable {
                status: Some(500),
                ..
            }
        ));
        assert!(matches!(
            classify(429, Some(7)),
            AttemptOutcome::Retryable {
                retry_after: Some(7),
                ..
            }
        ));
        assert!(matches!(
            classify(404, None),
            AttemptOutcome::Permanent { status: 404, .. }
        ));
        assert!(matches!(
            classify(302, None),
            AttemptOutcome::Permanent { .. }
        ));
    }
}
