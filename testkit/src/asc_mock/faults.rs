//! Faults the mock injects on demand, answered with Apple's error bodies.

use std::time::Duration;

use axum::response::Response;
use http::{StatusCode, header};

use super::error;

/// A response the mock gives instead of (or before) the normal one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 401 `NOT_AUTHORIZED`, as if the key were revoked.
    Unauthorized,
    /// 403 `FORBIDDEN_ERROR`.
    Forbidden,
    /// 404 `NOT_FOUND`.
    NotFound,
    /// 429 `RATE_LIMIT_EXCEEDED` with `Retry-After: <secs>`.
    TooManyRequests {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// 500 `UNEXPECTED_ERROR`.
    InternalServerError,
    /// 503, with `Retry-After` when given.
    ServiceUnavailable {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Any status with Apple's error body (e.g. 409 `ENTITY_ERROR`, 422 `ENTITY_ERROR.ATTRIBUTE.INVALID`).
    Status {
        /// HTTP status.
        status: u16,
        /// Apple's `code`.
        code: String,
        /// Apple's `detail`.
        detail: String,
    },
}

pub(crate) fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "NOT_AUTHORIZED",
        "Authentication credentials are missing or invalid.",
        "Provide a properly configured and signed bearer token, and make sure that it has not expired.",
    )
}

fn with_retry_after(mut response: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    response
}

/// The canned answer for a fault, or `None` for faults that only delay the normal answer.
pub(crate) fn fault_response(fault: &Fault) -> Option<Response> {
    let response = match fault {
        Fault::Unauthorized => unauthorized(),
        Fault::Forbidden => error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ERROR",
            "This request is forbidden for security reasons",
            "The API key in use does not allow this request",
        ),
        Fault::NotFound => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The specified resource does not exist",
            "",
        ),
        Fault::TooManyRequests { retry_after_secs } => with_retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                "The request rate limit has been reached.",
                "We've received too many requests for this API. \
                 Please wait and try again or slow down your request rate.",
            ),
            Some(*retry_after_secs),
        ),
        Fault::InternalServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            "An unexpected error occurred.",
            "An unexpected error occurred on the server side.",
        ),
        Fault::ServiceUnavailable { retry_after_secs } => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "The service is unavailable.",
                "",
            ),
            *retry_after_secs,
        ),
        Fault::Status {
            status,
            code,
            detail,
        } => error(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            "The request could not be completed.",
            detail,
        ),
        Fault::Delay(_) => return None,
    };
    Some(response)
}
