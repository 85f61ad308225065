//! Apple's JSON:API error body: parsed for callers that branch on its code, and shortened for conditions.

use serde_json::Value;

/// The first entry of an App Store Connect error body, `{"errors": [{status, code, title, detail}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct AppleError {
    /// The HTTP status, as a string.
    #[serde(default)]
    pub status: String,
    /// Machine-readable code, e.g. `ENTITY_ERROR.ATTRIBUTE.INVALID`.
    #[serde(default)]
    pub code: String,
    /// Short summary.
    #[serde(default)]
    pub title: String,
    /// What exactly was wrong, for a person.
    #[serde(default)]
    pub detail: String,
}

impl AppleError {
    /// The first error of `body`, if it is an ASC error document.
    pub fn parse(body: &[u8]) -> Option<AppleError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            errors: Vec<AppleError>,
        }
        serde_json::from_slice::<Doc>(body)
            .ok()?
            .errors
            .into_iter()
            .next()
    }
}

/// `CODE: detail` from an ASC JSON:API error body, shortened so it fits a status condition.
pub(super) fn asc_error_message(body: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let first = doc.get("errors")?.get(0)?;
    let code = first
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = ["detail", "title"]
        .iter()
        .find_map(|field| {
            first
                .get(*field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_default();
    let message = match (code.is_empty(), text.is_empty()) {
        (true, true) => return None,
        (false, false) => format!("{code}: {text}"),
        _ => format!("{code}{text}"),
    };
    const MAX_CHARS: usize = 300;
    Some(match message.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    })
}
