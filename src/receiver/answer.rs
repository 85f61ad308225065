//! Every answer the receiver gives, in one place: status code, body, the outcome word for metrics, and
//! `Retry-After` where Apple (or a script) should come back later.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is asked to wait when the receiver cannot record anything right now.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202: a new delivery was stored.
    Accepted(String),
    /// 200: the event was stored before.
    Duplicate(String),
    /// 404: no such route.
    UnknownRoute,
    /// 413: the body exceeds the limit.
    TooLarge,
    /// 408: the body did not arrive in time.
    Timeout,
    /// 401: missing, malformed or wrong signature, deliberately without detail.
    BadSignature,
    /// 429: too many failed signatures on this route.
    RateLimited,
    /// 400: signed, but not an App Store Connect event.
    BadRequest(String),
    /// 503: the secret or the delivery store is unavailable.
    Unavailable(String),
    /// 503: too many request bodies are being received at once; the body was not read.
    Busy,
    /// 413: signed and valid, but the delivery recording it is larger than the API server stores. The
    /// same answer comes every time, so a sender stops retrying.
    Unstorable(String),
    /// 422: the API server refused the delivery for a reason a retry cannot change.
    Refused(String),
}

impl Answer {
    /// The word counted in `asc_webhook_receiver_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Accepted(_) => "accepted",
            Answer::Duplicate(_) => "duplicate",
            Answer::UnknownRoute => "not_found",
            Answer::TooLarge => "too_large",
            Answer::Timeout => "timeout",
            Answer::BadSignature => "bad_signature",
            Answer::RateLimited => "rate_limited",
            Answer::BadRequest(_) => "bad_request",
            Answer::Unavailable(_) => "unavailable",
            Answer::Busy => "busy",
            Answer::Unstorable(_) => "unstorable",
            Answer::Refused(_) => "refused",
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Accepted(_) => StatusCode::ACCEPTED,
            Answer::Duplicate(_) => StatusCode::OK,
            Answer::UnknownRoute => StatusCode::NOT_FOUND,
            Answer::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Answer::Timeout => StatusCode::REQUEST_TIMEOUT,
            Answer::BadSignature => StatusCode::UNAUTHORIZED,
            Answer::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Answer::BadRequest(_) => StatusCode::BAD_REQUEST,
            Answer::Unavailable(_) | Answer::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Answer::Unstorable(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Answer::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Answer::Accepted(name) => json!({"delivery": name, "status": "accepted"}),
            Answer::Duplicate(name) => json!({"delivery": name, "status": "duplicate"}),
            Answer::UnknownRoute => json!({"error": "no such route"}),
            Answer::TooLarge => json!({"error": "request body too large"}),
            Answer::Timeout => json!({"error": "request body not received in time"}),
            Answer::BadSignature => json!({"error": "invalid signature"}),
            Answer::RateLimited => {
                json!({"error": "too many failed signatures on this route; slow down"})
            }
            Answer::BadRequest(why) => {
                json!({"error": format!("not an App Store Connect event: {why}")})
            }
            Answer::Unavailable(why) => json!({"error": format!("temporarily unavailable: {why}")}),
            Answer::Busy => {
                json!({"error": "temporarily unavailable: too many request bodies being received at once"})
            }
            Answer::Unstorable(why) => {
                json!({"error": format!("the event cannot be stored: {why}")})
            }
            Answer::Refused(why) => {
                json!({"error": format!("the API server refused the delivery: {why}")})
            }
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = matches!(
            self,
            Answer::Unavailable(_) | Answer::RateLimited | Answer::Busy
        );
        let mut response = (status, axum::Json(self.body())).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_and_rate_limited_carry_retry_after() {
        let r = Answer::Unavailable("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(
            Answer::Busy.into_response().headers()[header::RETRY_AFTER],
            "5"
        );
        assert!(
            Answer::RateLimited
                .into_response()
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
        assert!(
            !Answer::BadSignature
                .into_response()
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
    }

    #[test]
    fn bad_signature_gives_no_hint() {
        assert_eq!(
            Answer::BadSignature.body(),
            json!({"error": "invalid signature"})
        );
    }
}
