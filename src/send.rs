//! `asc-webhook-operator send`: sign a body exactly as App Store Connect does and POST it, so a route can be
//! tested end to end without Apple.

use crate::asc::signature;
use crate::cli::SendArgs;
use std::time::Duration;

/// Why a test delivery could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The secret or event file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `secret file` or `event file`.
        what: &'static str,
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The secret file is empty.
    #[error("the secret file {0} is empty")]
    EmptySecret(String),
    /// `--example` named no built-in example (clap normally catches this first).
    #[error("unknown example {0}")]
    UnknownExample(String),
    /// The request could not be sent.
    #[error("request to the route failed: {0}")]
    Http(#[source] reqwest::Error),
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// HTTP status code.
    pub status: u16,
    /// Response body (the receiver's answers are short JSON documents).
    pub body: String,
}

/// Reads the secret and body named by `args`, signs, posts, and returns the answer.
pub async fn send(args: &SendArgs) -> Result<SendOutcome, SendError> {
    let secret = std::fs::read(&args.secret_file).map_err(|source| SendError::Read {
        what: "secret file",
        path: args.secret_file.display().to_string(),
        source,
    })?;
    let secret = trim_trailing_newline(&secret);
    if secret.is_empty() {
        return Err(SendError::EmptySecret(
            args.secret_file.display().to_string(),
        ));
    }
    let body = match (&args.event, &args.example) {
        (Some(path), _) => std::fs::read(path).map_err(|source| SendError::Read {
            what: "event file",
            path: path.display().to_string(),
            source,
        })?,
        (None, Some(name)) => crate::examples::body(name)
            .ok_or_else(|| SendError::UnknownExample(name.clone()))?
            .to_vec(),
        (None, None) => return Err(SendError::UnknownExample(String::new())),
    };
    post_signed(&args.url, secret, body, args.timeout).await
}

/// POSTs `body` with the headers App Store Connect sends, signed with `secret`.
pub async fn post_signed(
    url: &str,
    secret: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<SendOutcome, SendError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(SendError::Http)?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header(signature::HEADER, signature::sign(secret, &body))
        .header("x-apple-request-uuid", random_uuid())
        .header("x-apple-jingle-correlation-key", "ASCWEBHOOKOPERATORSEND")
        .body(body)
        .send()
        .await
        .map_err(SendError::Http)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(SendError::Http)?;
    Ok(SendOutcome { status, body })
}

fn trim_trailing_newline(secret: &[u8]) -> &[u8] {
    let end = secret
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &secret[..end]
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_lose_only_their_trailing_newline() {
        assert_eq!(trim_trailing_newline(b"abc\n"), b"abc");
        assert_eq!(trim_trailing_newline(b"abc\r\n"), b"abc");
        assert_eq!(trim_trailing_newline(b" a b "), b" a b ");
        assert_eq!(trim_trailing_newline(b"\n"), b"");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
