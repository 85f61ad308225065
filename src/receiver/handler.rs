//! One request's way through the receiver.

use super::Receiver;
use super::answer::Answer;
use super::backend::{Recorded, SinkError};
use super::record::build_delivery_for;
use super::routes::ReceiverRoute;
use super::secret_cache::{SecretBytes, SecretLookupError};
use super::store::RecordError;
use crate::asc::event::WebhookEvent;
use crate::asc::signature::{self, SignatureError};
use crate::metrics::{OutcomeLabels, RequestLabels, RouteLabels};
use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A signature failure re-reads the secret at most this often (a younger read is re-read once it is this
/// old).
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// The hook endpoint. The path segments are borrowed and the headers read in place (axum's `Path<String>`
/// and `HeaderMap` extractors would copy them per request).
pub(super) async fn hook(
    State(rx): State<Arc<Receiver>>,
    params: RawPathParams,
    request: Request,
) -> Answer {
    let started = Instant::now();
    let param = |name: &str| {
        params
            .iter()
            .find_map(|(k, v)| (k == name).then_some(v))
            .unwrap_or_default()
    };
    let (namespace, route_name) = (param("namespace"), param("route"));
    let (parts, body) = request.into_parts();
    let route = rx.routes.route(namespace, route_name);
    let answer = match &route {
        None => Answer::UnknownRoute,
        Some(route) => handle(&rx, route, &parts.headers, body).await,
    };
    crate::memory::note_work();
    let label = match route {
        Some(route) => route.label.clone(),
        None => rx.unknown_route.clone(),
    };
    rx.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: label,
            outcome: answer.outcome(),
        })
        .inc();
    rx.metrics
        .request_duration
        .get_or_create(&OutcomeLabels {
            outcome: answer.outcome(),
        })
        .observe(started.elapsed().as_secs_f64());
    match &answer {
        Answer::Accepted(name) => {
            tracing::info!(%namespace, route = %route_name, delivery = %name, "event accepted")
        }
        Answer::Duplicate(name) => {
            tracing::info!(%namespace, route = %route_name, delivery = %name, "duplicate event")
        }
        Answer::Unavailable(why) => {
            tracing::warn!(%namespace, route = %route_name, reason = %why, outcome = answer.outcome(), "event not recorded")
        }
        Answer::Unstorable(why) | Answer::Refused(why) => {
            tracing::warn!(%namespace, route = %route_name, reason = %why, outcome = answer.outcome(), "signed event refused for good: it can never be stored")
        }
        other => {
            tracing::debug!(%namespace, route = %route_name, outcome = other.outcome(), "request refused")
        }
    }
    answer
}

async fn handle(rx: &Receiver, route: &ReceiverRoute, headers: &HeaderMap, body: Body) -> Answer {
    let declared = match declared_length(rx, headers) {
        Ok(declared) => declared,
        Err(answer) => return answer,
    };
    // Held until the answer: the body's bytes stay in memory that long.
    let Some(_reservation) = rx
        .budget
        .try_reserve(declared.unwrap_or(rx.config.max_body_bytes))
    else {
        return Answer::Busy;
    };
    let body = match read_body(rx, declared, body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let secret = match rx.secrets.get(&route.secret, &route.secret_key).await {
        Ok(secret) => secret,
        Err(e) => return unavailable_secret(e),
    };
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    if let Err(why) = verify_with_reread(rx, route, &secret, &body, header).await {
        return why;
    }
    let event = match WebhookEvent::parse(body) {
        Ok(event) => event,
        Err(e) => return Answer::BadRequest(e.to_string()),
    };
    let request_id = headers
        .get("x-apple-request-uuid")
        .and_then(|v| v.to_str().ok());
    let delivery = build_delivery_for(
        &route.owner,
        &event,
        request_id,
        &crate::time::receipt_now(),
    );
    let name = delivery.metadata.name.clone().unwrap_or_default();
    match rx.store.record(delivery).await {
        Ok(Recorded::Created) => {
            rx.metrics
                .state
                .count_event(&route.label, &event.event_type);
            Answer::Accepted(name)
        }
        Ok(Recorded::Duplicate) => Answer::Duplicate(name),
        Err(RecordError::Sink(SinkError::Unavailable(e))) => {
            Answer::Unavailable(format!("cannot store the delivery: {e}"))
        }
        Err(RecordError::Sink(SinkError::TooLarge(e))) => {
            Answer::Unstorable(format!("the API server refused it as too large: {e}"))
        }
        Err(RecordError::Sink(SinkError::Refused(e))) => Answer::Refused(e.to_string()),
        Err(e @ (RecordError::TooLargeToStore(_) | RecordError::BodyTooLarge { .. })) => {
            Answer::Unstorable(e.to_string())
        }
    }
}

/// The declared `Content-Length`; 413 at once when it is over the limit.
fn declared_length(rx: &Receiver, headers: &HeaderMap) -> Result<Option<usize>, Answer> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > rx.config.max_body_bytes as u64 => Err(Answer::TooLarge),
        Some(len) => Ok(usize::try_from(len).ok()),
        None => Ok(None),
    }
}

/// Reads the body into one buffer of its own. Each chunk is copied and dropped: a chunk keeps hyper's
/// whole read buffer alive, so keeping a slow sender's many small chunks would pin many buffers.
async fn read_body(rx: &Receiver, declared: Option<usize>, body: Body) -> Result<Bytes, Answer> {
    let max = rx.config.max_body_bytes;
    let collect = async move {
        let mut body = body;
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(max));
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|_| Answer::BadRequest("the request body could not be read".into()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(Answer::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(rx.config.body_timeout, collect).await {
        Err(_) => Err(Answer::Timeout),
        Ok(result) => result,
    }
}

/// Verifies the signature; on a mismatch re-reads a secret that may have been rotated, at most once per
/// second per Secret, and counts the failure against the route's budget.
async fn verify_with_reread(
    rx: &Receiver,
    prepared: &ReceiverRoute,
    secret: &SecretBytes,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), Answer> {
    let first = signature::verify(secret.expose(), body, header);
    let Err(why) = first else { return Ok(()) };
    let route_key = &prepared.label;
    rx.metrics
        .signature_failures
        .get_or_create(&RouteLabels {
            route: route_key.clone(),
        })
        .inc();
    if rx.failed_signatures.check_key(route_key).is_err() {
        return Err(Answer::RateLimited);
    }
    if why == SignatureError::Mismatch {
        if let Ok(fresh) = rx
            .secrets
            .reread_after_mismatch(&prepared.secret, &prepared.secret_key, REREAD_AFTER)
            .await
            && signature::verify(fresh.expose(), body, header).is_ok()
        {
            return Ok(());
        }
        // Only where the operator itself rotates the secret in App Store Connect: deliveries Apple
        // signed before the change are still arriving. Manual routes never accept an old secret.
        let grace = rx.config.secret_rotation_grace;
        if prepared.managed_in_asc
            && !grace.is_zero()
            && let Some(old) = rx
                .secrets
                .previous(&prepared.secret, &prepared.secret_key, grace)
                .await
            && signature::verify(old.expose(), body, header).is_ok()
        {
            tracing::info!(route = %route_key, "accepted a signature made with the previous webhook secret (rotation grace)");
            return Ok(());
        }
    }
    Err(Answer::BadSignature)
}

fn unavailable_secret(e: SecretLookupError) -> Answer {
    // A missing Secret is the operator's misconfiguration, not the sender's: 503 tells Apple to come back,
    // and the route's status says what to fix.
    match e {
        SecretLookupError::SecretNotFound { .. } | SecretLookupError::KeyNotFound { .. } => {
            Answer::Unavailable("the route's webhook secret is not configured".into())
        }
        SecretLookupError::Unavailable(_) => {
            Answer::Unavailable("cannot read the route's webhook secret".into())
        }
    }
}
