//! Token checks the mock applies to every request, mirroring what App Store Connect documents.

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthOutcome, MockKeyKind};

const AUDIENCE: &str = "appstoreconnect-v1";
const MAX_SPAN_SECS: i64 = 20 * 60;
/// How far in the future `iat` may be before the mock calls it a clock problem.
const FUTURE_IAT_TOLERANCE_SECS: i64 = 60;

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    iat: Option<i64>,
    exp: i64,
    scope: Option<Vec<String>>,
}

/// What a verified token said about itself, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    /// `exp - iat`.
    pub lifetime_secs: Option<i64>,
    /// The `scope` claim, when the token had one.
    pub scope: Option<Vec<String>>,
}

/// Holds the public key and the identifiers a token must carry.
pub(crate) struct Verifier {
    key: DecodingKey,
    key_id: String,
    issuer_id: String,
}

impl Verifier {
    pub(crate) fn new(key: DecodingKey, key_id: String, issuer_id: String) -> Self {
        Verifier {
            key,
            key_id,
            issuer_id,
        }
    }

    /// Checks the `Authorization` header of a request for `method path_and_query`; the rejection reason is
    /// for test assertions and logs.
    pub(crate) fn check(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> (AuthOutcome, TokenFacts) {
        match self.verify(method, path_and_query, headers) {
            Ok((kind, facts)) => (AuthOutcome::Accepted(kind), facts),
            Err(reason) => (AuthOutcome::Rejected(reason), TokenFacts::default()),
        }
    }

    fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<(MockKeyKind, TokenFacts), String> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or("no Authorization header")?
            .to_str()
            .map_err(|_| "Authorization header is not ASCII")?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or("Authorization is not a Bearer token")?;

        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed JWT header: {e}"))?;
        if header.alg != Algorithm::ES256 {
            return Err(format!("alg is {:?}, not ES256", header.alg));
        }
        if header.typ.as_deref() != Some("JWT") {
            return Err("typ is not JWT".into());
        }
        if header.kid.as_deref() != Some(self.key_id.as_str()) {
            return Err(format!("unknown kid {:?}", header.kid));
        }

        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // Apple allows no grace: a token past `exp` is refused, and tests of expiry must be exact.
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => {
                    "signature does not verify with the known key".to_owned()
                }
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::InvalidAudience => format!("aud is not {AUDIENCE}"),
                _ => format!("token rejected: {e}"),
            })?
            .claims;

        let iat = claims.iat.ok_or("no iat claim")?;
        if claims.exp - iat > MAX_SPAN_SECS {
            return Err(format!(
                "exp - iat is {} s, more than {MAX_SPAN_SECS}",
                claims.exp - iat
            ));
        }
        if iat > jiff::Timestamp::now().as_second() + FUTURE_IAT_TOLERANCE_SECS {
            return Err("iat is in the future".into());
        }
        // Apple limits a scoped token to the listed operations, written as Apple documents them: the
        // method, the path and the query raw (`GET /v1/apps?filter[platform]=IOS`), paging left out.
        if let Some(scope) = &claims.scope {
            let wanted = raw_scope(method, path_and_query);
            if !scope.contains(&wanted) {
                return Err(format!("token scope {scope:?} does not allow {wanted}"));
            }
        }
        let kind = match (claims.iss.as_deref(), claims.sub.as_deref()) {
            (Some(iss), None) if iss == self.issuer_id => MockKeyKind::Team,
            (Some(iss), None) => return Err(format!("iss {iss:?} is not the known issuer")),
            (Some(_), Some(_)) => return Err("team token must not carry sub".into()),
            (None, Some("user")) => MockKeyKind::Individual,
            (None, _) => return Err("no iss, and sub is not \"user\"".into()),
        };
        Ok((
            kind,
            TokenFacts {
                lifetime_secs: Some(claims.exp - iat),
                scope: claims.scope,
            },
        ))
    }
}

/// The scope entry Apple documents for a request: `METHOD /path?query` with the query percent-decoded
/// (brackets and commas as they are) and without the paging parameters `limit` and `cursor`.
pub fn raw_scope(method: &str, path_and_query: &str) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let pairs: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "limit" && k != "cursor")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{}", pairs.join("&"))
    }
}
