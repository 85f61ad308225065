//! `metav1.Status` failures. kube's error handling deserialises the body of every 4xx/5xx into
//! `kube::core::Status`, so the shape here has to match the real server's byte for byte in the
//! fields clients branch on (`code`, `reason`, `details`).

use serde_json::{Value, json};

/// A failed API call, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Identifies the object an error is about, as the real server puts it in `details`.
pub(crate) struct Target<'a> {
    pub group: &'a str,
    /// The `details.kind` field carries the resource (plural) for most errors and the Kind for
    /// `Invalid`, mirroring apimachinery's `NewNotFound(qualifiedResource, …)` vs
    /// `NewInvalid(qualifiedKind, …)`.
    pub kind: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({ "name": self.name, "kind": self.kind });
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(t: Target<'_>) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", t.qualified(), t.name),
            details: Some(t.details()),
        }
    }

    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(t: Target<'_>) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", t.qualified(), t.name),
            details: Some(t.details()),
        }
    }

    pub fn conflict(t: Target<'_>, why: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {why}",
                t.qualified(),
                t.name
            ),
            details: Some(t.details()),
        }
    }

    pub fn stale(t: Target<'_>) -> Self {
        Self::conflict(
            t,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `causes` are `(field, message)` pairs; the message lists them all so a test failure shows
    /// every violated path at once.
    pub fn invalid(t: Target<'_>, causes: Vec<(String, String)>) -> Self {
        let summary = causes
            .iter()
            .map(|(f, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut details = t.details();
        details["causes"] = causes
            .iter()
            .map(|(f, m)| json!({ "reason": "FieldValueInvalid", "message": m, "field": f }))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{}\" is invalid: {summary}", t.qualified(), t.name),
            details: Some(details),
        }
    }

    /// The authorizer's refusal, as apimachinery's `NewForbidden` words it.
    pub fn forbidden(t: Target<'_>, why: &str) -> Self {
        let message = if t.name.is_empty() {
            format!("{} is forbidden: {why}", t.qualified())
        } else {
            format!("{} \"{}\" is forbidden: {why}", t.qualified(), t.name)
        };
        let mut details = t.details();
        if t.name.is_empty()
            && let Some(d) = details.as_object_mut()
        {
            d.remove("name");
        }
        Self {
            code: 403,
            reason: "Forbidden",
            message,
            details: Some(details),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The reason the real server attaches to a bare status code, used for injected faults.
    pub fn for_code(code: u16) -> Self {
        let (reason, message) = match code {
            400 => ("BadRequest", "bad request"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden"),
            404 => (
                "NotFound",
                "the server could not find the requested resource",
            ),
            409 => ("Conflict", "conflict"),
            410 => ("Expired", "too old resource version"),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            500 => (
                "InternalError",
                "an error on the server has prevented the request from succeeding",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            _ => ("", "injected fault"),
        };
        Self::new(code, reason, message)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
