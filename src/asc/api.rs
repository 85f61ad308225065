//! App Store Connect API client: authenticated GETs against the credential's API origin only, with
//! bounded retries.
//!
//! Webhook payloads carry a `links.self` URL. Following it blindly would let anyone who can get a payload
//! signed (or a future Apple bug) point our token at another host, so every URL is checked against the
//! configured `api_url` origin before a token is even minted, and redirects are never followed. Each token
//! is scoped to the one GET it is minted for (unless `scoped_tokens` is off) and lives five minutes; the
//! webhook writes (POST, PATCH, DELETE) carry an unscoped token, as Apple documents scopes for GET only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::retry;
use backon::Retryable;
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::token::{TokenError, TokenSource};

/// The host Apple's alternative-distribution events link to; the same API is served on the credential's
/// API origin, where the token may go.
pub const ALTERNATIVE_DISTRIBUTION_HOST: &str = "api-appstoreconnect.itunes.apple.com";

/// Timeouts, retry bounds and size limits for an [`AscClient`].
#[derive(Debug, Clone)]
pub struct AscClientOptions {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole attempt, body included.
    pub request_timeout: Duration,
    /// Total attempts per call, the first one included.
    pub max_attempts: usize,
    /// First retry delay; later ones double (with jitter) up to `max_delay`.
    pub base_delay: Duration,
    /// Largest computed retry delay.
    pub max_delay: Duration,
    /// Largest `Retry-After` honoured: a server asking for longer gets this instead, so a call never
    /// stalls a reconcile for minutes.
    pub max_retry_after: Duration,
    /// Responses larger than this are refused rather than buffered.
    pub max_body_bytes: usize,
    /// Whether each GET carries a token scoped to that one request (`--asc-token-scope`).
    pub scoped_tokens: bool,
}

impl Default for AscClientOptions {
    fn default() -> Self {
        AscClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            max_body_bytes: 8 * 1024 * 1024,
            scoped_tokens: true,
        }
    }
}

/// What went wrong talking to the App Store Connect API. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A URL (the configured `apiUrl` or a payload link) does not parse.
    #[error("{url:?} is not a valid URL")]
    InvalidUrl {
        /// The offending text.
        url: String,
        /// The parse error.
        #[source]
        source: url::ParseError,
    },
    /// The configured `apiUrl` is not `http` or `https`.
    #[error("apiUrl {url} must use https (or http for a local test server)")]
    UnsupportedScheme {
        /// The configured URL.
        url: String,
    },
    /// A URL points somewhere other than the credential's API origin; no request was made.
    #[error(
        "refusing to call {url}: only {expected} (the credential's apiUrl origin) may be called"
    )]
    ForeignOrigin {
        /// The refused URL, without any userinfo.
        url: String,
        /// The only origin allowed.
        expected: String,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// No token could be minted.
    #[error("could not mint an App Store Connect API token")]
    Token(#[from] TokenError),
    /// 401: the token was refused.
    #[error(
        "ASC API refused the token (401): check keyId/issuerId and that the key is not revoked{}",
        asc_says(.asc_message)
    )]
    Unauthorized {
        /// Apple's error code and detail, if any.
        asc_message: Option<String>,
    },
    /// 401 for a token scoped to one GET, while an unscoped token from the same key is accepted: Apple
    /// did not accept the scope as written.
    #[error(
        "ASC API refused the token scoped to {scope:?} (401) although the same key works unscoped: turn \
         scoped tokens off with --asc-token-scope=off (env ASC_TOKEN_SCOPE=off, chart value \
         ascApi.tokenScope: false){}",
        asc_says(.asc_message)
    )]
    TokenScopeRefused {
        /// The scope refused.
        scope: String,
        /// Apple's error code and detail, if any.
        asc_message: Option<String>,
    },
    /// 403: the key may not do this.
    #[error(
        "ASC API denied the request (403): the key's role does not allow it, or the key lacks access to this app{}",
        asc_says(.asc_message)
    )]
    Forbidden {
        /// Apple's error code and detail, if any.
        asc_message: Option<String>,
    },
    /// 404: no such object.
    #[error(
        "ASC API has no object at {url} (404): it was deleted, or the key belongs to another team{}",
        asc_says(.asc_message)
    )]
    NotFound {
        /// The URL requested.
        url: String,
        /// Apple's error code and detail, if any.
        asc_message: Option<String>,
    },
    /// Any other unsuccessful status (retryable ones once retries are used up).
    #[error("ASC API answered {status} for {url}{}", asc_says(.asc_message))]
    Status {
        /// HTTP status code.
        status: u16,
        /// The URL requested.
        url: String,
        /// Apple's error code and detail, if any.
        asc_message: Option<String>,
        /// Apple's first error object, when the body was one (for callers that act on `code`).
        apple: Option<Box<AppleError>>,
    },
    /// Connecting, sending or reading failed (including timeouts).
    #[error("request to {url} failed")]
    Transport {
        /// The URL requested.
        url: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The body exceeded [`AscClientOptions::max_body_bytes`].
    #[error("response from {url} exceeds {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The configured limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("response from {url} is not JSON")]
    Decode {
        /// The URL requested.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Retryable failures continued until the attempt budget ran out.
    #[error("ASC API still failing after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: usize,
        /// The last failure.
        #[source]
        last: Box<ApiError>,
    },
}

fn asc_says(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(" (ASC: {m})"))
        .unwrap_or_default()
}

/// One failed attempt, with what the retry loop needs to know about it.
struct Failure {
    error: ApiError,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn fatal(error: ApiError) -> Self {
        Failure {
            error,
            retryable: false,
            retry_after: None,
        }
    }
}

/// Client for the App Store Connect API, bound to one credential's origin and token source.
#[derive(Debug, Clone)]
pub struct AscClient {
    http: reqwest::Client,
    api_url: Url,
    tokens: TokenSource,
    options: AscClientOptions,
}

impl AscClient {
    /// A client with default options.
    pub fn new(api_url: &str, tokens: TokenSource) -> Result<Self, ApiError> {
        Self::with_options(api_url, tokens, AscClientOptions::default())
    }

    /// A client with the given options.
    pub fn with_options(
        api_url: &str,
        tokens: TokenSource,
        options: AscClientOptions,
    ) -> Result<Self, ApiError> {
        let api_url = Url::parse(api_url).map_err(|source| ApiError::InvalidUrl {
            url: api_url.to_owned(),
            source,
        })?;
        if !matches!(api_url.scheme(), "https" | "http") || api_url.host().is_none() {
            return Err(ApiError::UnsupportedScheme {
                url: api_url.to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // A redirect could leave the API origin; treat it as an unexpected status instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::resources::names::USER_AGENT)
            .build()
            .map_err(ApiError::Client)?;
        Ok(AscClient {
            http,
            api_url,
            tokens,
            options,
        })
    }

    /// The configured API URL.
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// The token source used for every request.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// GETs `path_and_query` (e.g. `/v1/webhooks/{id}/deliveries?limit=50`) on the API origin.
    pub async fn get_json(&self, path_and_query: &str) -> Result<Value, ApiError> {
        self.send_json(Method::GET, path_and_query, None).await
    }

    /// Sends `method` to `path_and_query` on the API origin with an optional JSON body; answers the JSON
    /// body (`Null` for an empty one, e.g. 204). POST is not idempotent: it is retried only when the
    /// server cannot have acted on it (429, or no connection), never after a 5xx or a timeout.
    pub async fn send_json(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self
            .api_url
            .join(path_and_query)
            .map_err(|source| ApiError::InvalidUrl {
                url: path_and_query.to_owned(),
                source,
            })?;
        // `join` accepts absolute and scheme-relative input ("//evil.example/x"); the origin check in
        // `call` is what keeps the call on the API origin.
        self.call(method, url, body).await
    }

    /// A cheap authenticated call (`GET /v1/apps?limit=1`) proving the key, ids and API URL work.
    pub async fn verify(&self) -> Result<(), ApiError> {
        self.get_json("/v1/apps?limit=1").await.map(drop)
    }

    fn check_origin(&self, url: &Url) -> Result<(), ApiError> {
        let has_userinfo = !url.username().is_empty() || url.password().is_some();
        if url.origin() == self.api_url.origin() && !has_userinfo {
            return Ok(());
        }
        let mut shown = url.clone();
        // Userinfo may hold a password; the error must not repeat it.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        Err(ApiError::ForeignOrigin {
            url: shown.to_string(),
            expected: self.api_url.origin().ascii_serialization(),
        })
    }

    async fn get_url(&self, url: Url) -> Result<Value, ApiError> {
        self.call(Method::GET, url, None).await
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.check_origin(&url)?;
        // Apple documents scopes for GET requests only; writes carry an unscoped (still short) token.
        let scope = (method == Method::GET && self.options.scoped_tokens).then(|| scope_of(&url));
        let result = self.retried(&method, &url, body, scope.as_deref()).await;
        match (result, scope) {
            (Err(ApiError::Unauthorized { asc_message }), Some(scope)) => {
                // A 401 says "check the key", which is wrong advice when only the scope was refused.
                if self.works_unscoped().await {
                    Err(ApiError::TokenScopeRefused { scope, asc_message })
                } else {
                    Err(ApiError::Unauthorized { asc_message })
                }
            }
            (result, _) => result,
        }
    }

    /// Whether the key is accepted for the credential check without a scope (one attempt).
    async fn works_unscoped(&self) -> bool {
        let Ok(url) = self.api_url.join("/v1/apps?limit=1") else {
            return false;
        };
        self.attempt(&Method::GET, &url, None, true, None)
            .await
            .is_ok()
    }

    async fn retried(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        scope: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (method, url) = (method.clone(), url.clone());
        let idempotent = method != Method::POST;
        let attempts = AtomicUsize::new(0);
        let backoff = retry::Backoff {
            base: self.options.base_delay,
            max: self.options.max_delay,
        }
        .delays(self.options.max_attempts.saturating_sub(1));
        let cap = self.options.max_retry_after;
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(&method, &url, body, idempotent, scope).await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|failure: &Failure| failure.retryable)
        .adjust(|failure: &Failure, computed| {
            // `None` means the budget is spent; otherwise wait at least as long as the server asked.
            computed.map(|delay| retry::honour(delay, failure.retry_after, cap))
        })
        .notify(|failure: &Failure, delay| {
            let error = &failure.error;
            tracing::warn!(%method, %url, %error, retry_in = ?delay, "ASC API call failed; retrying");
        })
        .await;
        result.map_err(|failure| {
            if failure.retryable {
                ApiError::GaveUp {
                    attempts: attempts.load(Ordering::Relaxed),
                    last: Box::new(failure.error),
                }
            } else {
                failure.error
            }
        })
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        json: Option<&Value>,
        idempotent: bool,
        scope: Option<&str>,
    ) -> Result<Value, Failure> {
        let token = self
            .tokens
            .token_for(scope)
            .await
            .map_err(|e| Failure::fatal(e.into()))?;
        let transport = |source: reqwest::Error| Failure {
            retryable: source.is_connect()
                || (idempotent && (source.is_timeout() || source.is_request() || source.is_body())),
            error: ApiError::Transport {
                url: url.to_string(),
                source,
            },
            retry_after: None,
        };
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json");
        if let Some(json) = json {
            request = request.json(json);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        crate::state_metrics::count_asc_call(method, status);
        tracing::debug!(%method, url = %url, status = status.as_u16(), "ASC API answered");
        let retry_after = retry_after(&response);
        let body = self.read_body(&mut response, url, &transport).await?;

        if status.is_success() {
            return decode_success(url, &body);
        }
        Err(self
            .status_failure(status, url, &body, idempotent, retry_after)
            .await)
    }

    /// Reads the answer's body within `--max-body-bytes`, refusing early when the declared length is
    /// already over it, so one oversized answer cannot hold unbounded memory.
    async fn read_body(
        &self,
        response: &mut reqwest::Response,
        url: &Url,
        transport: &impl Fn(reqwest::Error) -> Failure,
    ) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        if response
            .content_length()
            .is_some_and(|len| len > self.options.max_body_bytes as u64)
        {
            return Err(Failure::fatal(self.too_large(url)));
        }
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.options.max_body_bytes {
                return Err(Failure::fatal(self.too_large(url)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The failure an unsuccessful status stands for, and whether retrying it may help; kept apart from
    /// `attempt` because a 401 also drops the cached token.
    async fn status_failure(
        &self,
        status: StatusCode,
        url: &Url,
        body: &[u8],
        idempotent: bool,
        retry_after: Option<Duration>,
    ) -> Failure {
        let asc_message = asc_error_message(body);
        let error = match status {
            StatusCode::UNAUTHORIZED => {
                // The cached token may be the problem (e.g. minted before a clock jump); the next call
                // should try a fresh one rather than repeat this one for its remaining lifetime.
                self.tokens.invalidate().await;
                ApiError::Unauthorized { asc_message }
            }
            StatusCode::FORBIDDEN => ApiError::Forbidden { asc_message },
            StatusCode::NOT_FOUND => ApiError::NotFound {
                url: url.to_string(),
                asc_message,
            },
            _ => ApiError::Status {
                status: status.as_u16(),
                url: url.to_string(),
                asc_message,
                apple: AppleError::parse(body).map(Box::new),
            },
        };
        let retryable =
            status == StatusCode::TOO_MANY_REQUESTS || (idempotent && status.is_server_error());
        Failure {
            error,
            retryable,
            retry_after,
        }
    }

    fn too_large(&self, url: &Url) -> ApiError {
        ApiError::TooLarge {
            url: url.to_string(),
            limit: self.options.max_body_bytes,
        }
    }
}

/// The token scope for a GET of `url`, in the form Apple documents (`GET /v1/apps?filter[platform]=IOS`):
/// the path and the query with nothing percent-encoded, and without the paging parameters `limit` and
/// `cursor`, so every page of a list is covered by the first page's scope.
pub fn scope_of(url: &Url) -> String {
    let pairs: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k != "limit" && k != "cursor")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        format!("GET {}", url.path())
    } else {
        format!("GET {}?{}", url.path(), pairs.join("&"))
    }
}

/// A successful answer's JSON; an empty (or all-whitespace) body, as a 204 has, is `null`.
fn decode_success(url: &Url, body: &[u8]) -> Result<Value, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|source| {
        Failure::fatal(ApiError::Decode {
            url: url.to_string(),
            source,
        })
    })
}

/// `Retry-After` (delta-seconds or HTTP-date) on 429/503, the statuses it is defined for here.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
    .then(|| retry::retry_after(response.headers()))
    .flatten()
}

mod apple_error;
pub use apple_error::AppleError;
use apple_error::asc_error_message;
mod instance;

#[cfg(test)]
mod tests;
