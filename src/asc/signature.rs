//! `x-apple-signature: hmacsha256=<hex>`: HMAC-SHA256 of the raw request body, keyed with the secret chosen
//! when the webhook was created in App Store Connect.
//!
//! Verification runs over the exact bytes received, before any parsing, and compares digests in constant
//! time (`hmac`'s `verify_slice`), so a caller learns nothing from timing about how much of a guess was right.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the header Apple puts the signature in.
pub const HEADER: &str = "x-apple-signature";
const SCHEME: &str = "hmacsha256=";
const DIGEST_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The receiver answers every variant with the same 401: the distinction is for
/// metrics and tests, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header, or an empty one.
    #[error("signature header is missing")]
    Missing,
    /// Not `hmacsha256=` followed by 64 hex digits.
    #[error("signature header is malformed")]
    Malformed,
    /// Well formed, but not the HMAC of this body with this secret.
    #[error("signature does not match")]
    Mismatch,
}

/// Parses `hmacsha256=<64 hex digits>` (hex in either case) into the raw digest.
pub fn parse_header(value: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SignatureError::Missing);
    }
    let hex_digest = value
        .get(..SCHEME.len())
        .filter(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|_| &value[SCHEME.len()..])
        .ok_or(SignatureError::Malformed)?;
    let mut digest = [0u8; DIGEST_LEN];
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// Checks `header` (the `x-apple-signature` value, if any) against `body` signed with `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let digest = parse_header(header.ok_or(SignatureError::Missing)?)?;
    mac(secret, body)
        .verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Apple would send for `body` signed with `secret`: `hmacsha256=<lowercase hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let digest = mac(secret, body).finalize().into_bytes();
    format!("{SCHEME}{}", hex::encode(digest))
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this constructor cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        body_file: String,
        secret: String,
        #[serde(rename = "x-apple-signature")]
        signature: String,
        valid: bool,
        why: Option<String>,
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/asc");

    #[test]
    fn every_published_vector_verifies_as_stated() {
        let text = std::fs::read_to_string(format!("{FIXTURES}/signature-vectors.json")).unwrap();
        let vectors: Vectors = serde_json::from_str(&text).unwrap();
        assert!(vectors.vectors.len() >= 10);
        for v in vectors.vectors {
            let body = std::fs::read(format!("{FIXTURES}/{}", v.body_file)).unwrap();
            let result = verify(v.secret.as_bytes(), &body, Some(&v.signature));
            assert_eq!(
                result.is_ok(),
                v.valid,
                "{} ({}): {result:?}",
                v.body_file,
                v.why.as_deref().unwrap_or("valid")
            );
        }
    }

    /// The example in Apple's webhook documentation ("Set up notification authentication"): this exact
    /// secret and body, and the header App Store Connect would send with them.
    #[test]
    fn apples_documented_example_verifies_and_one_byte_more_does_not() {
        let header = "hmacsha256=7f062172b01cb00b53ca068614674a3d982a34062a0f5d37687d5e3377e54657";
        assert_eq!(
            verify(b"This is my secret", b"Hello, World!", Some(header)),
            Ok(())
        );
        assert_eq!(sign(b"This is my secret", b"Hello, World!"), header);
        assert_eq!(
            verify(b"This is my secret", b"Hello, World!\n", Some(header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"This is my secret.", b"Hello, World!", Some(header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn signing_reproduces_apples_lowercase_header() {
        let body = std::fs::read(format!("{FIXTURES}/events/build-upload-complete.json")).unwrap();
        assert_eq!(
            sign(b"k3tSx0mJ7vQ2pL9wR4zN8cF1bH6dY5aE", &body),
            "hmacsha256=05ef2fd932a120fd48f94c58e9c08db0f4166ece04738d6a752ed0ead63f4054"
        );
    }

    #[test]
    fn missing_header_is_reported_as_missing() {
        assert_eq!(verify(b"s", b"{}", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s", b"{}", Some("  ")),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn one_changed_body_byte_is_a_mismatch() {
        let header = sign(b"secret", b"{\"a\":1}");
        assert_eq!(
            verify(b"secret", b"{\"a\":2}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"secret", b"{\"a\":1}", Some(&header)), Ok(()));
    }

    #[test]
    fn digest_of_wrong_length_or_extra_text_is_malformed() {
        let good = sign(b"k", b"x");
        assert_eq!(
            parse_header(&format!("{good}00")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(parse_header("hmacsha256="), Err(SignatureError::Malformed));
        assert_eq!(parse_header("hmacsha256"), Err(SignatureError::Malformed));
        assert_eq!(parse_header("hmacsha256=é"), Err(SignatureError::Malformed));
    }
}
