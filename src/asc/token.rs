//! ES256 tokens for the App Store Connect API, and a cache that hands the same token to every caller
//! until shortly before it expires.
//!
//! Apple accepts tokens that live at most 20 minutes (`exp - iat <= 1200`). The operator makes one GET at a
//! time (enrichment, verification), retried for at most a minute or two, so it mints 5-minute tokens:
//! a token that leaked would be useful for minutes, not for twenty. `iat` is backdated a minute, so a
//! server clock slightly behind ours still sees a token that is already valid.
//!
//! Tokens can also carry Apple's optional `scope` claim, a list like `["GET /v1/apps?filter[platform]=IOS"]`
//! that limits the token to those requests; the API client scopes every token to the one GET it is
//! minted for (see [`TokenSource::token_for`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Audience every App Store Connect API token must carry.
pub const AUDIENCE: &str = "appstoreconnect-v1";
/// Seconds `iat` is set before the real minting time, to absorb clock skew with Apple's servers.
pub const BACKDATE_SECS: i64 = 60;
/// Seconds between the (real) minting time and `exp`: one call and its retries, with room to spare.
pub const LIFETIME_SECS: i64 = 5 * 60;
/// A cached token is replaced once it has fewer than this many seconds left, so a request that is slow to
/// reach Apple (or retried with backoff) never arrives with an expired token.
pub const REFRESH_MARGIN_SECS: i64 = 2 * 60;
/// Apple's hard limit on `exp - iat`.
pub const MAX_TOKEN_SPAN_SECS: i64 = 20 * 60;

const _: () = assert!(LIFETIME_SECS + BACKDATE_SECS <= MAX_TOKEN_SPAN_SECS);
const _: () = assert!(REFRESH_MARGIN_SECS < LIFETIME_SECS);

/// Why an API key could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key id is empty or contains characters that cannot appear in a JWT header.
    #[error("keyId {key_id:?} is not a valid App Store Connect key id")]
    KeyIdInvalid {
        /// The key id as given (not a secret).
        key_id: String,
    },
    /// An issuer id was given but is empty.
    #[error("issuerId is empty: omit it entirely for an individual key")]
    IssuerIdEmpty,
    /// The private key could not be read or cannot sign ES256 tokens.
    #[error("private key for keyId {key_id} is unusable: {hint}")]
    KeyInvalid {
        /// Which key was being loaded.
        key_id: String,
        /// What the operator can do about it; never derived from the key bytes beyond their PEM label.
        hint: &'static str,
        /// The library error, which describes the failure kind only.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Signing a token failed with a key that had loaded fine.
    #[error("could not sign an App Store Connect token with keyId {key_id}")]
    Sign {
        /// Which key was signing.
        key_id: String,
        /// The library error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Whether a key belongs to a team (tokens carry `iss`) or to one user (tokens carry `sub: "user"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum KeyKind {
    /// A team key: the credential has an issuer id.
    Team,
    /// An individual key: no issuer id.
    Individual,
}

/// An App Store Connect API private key, ready to sign tokens. Its `Debug` output redacts the key.
#[derive(Clone)]
pub struct ApiKey {
    key_id: String,
    issuer_id: Option<String>,
    key: EncodingKey,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .field("issuer_id", &self.issuer_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    iat: i64,
    exp: i64,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<[&'a str; 1]>,
}

impl ApiKey {
    /// Loads a key from the contents of Apple's `.p8` file (PKCS#8 PEM, P-256).
    ///
    /// `issuer_id` is `None` for an individual key. The key is test-signed once so that a PEM that parses
    /// but cannot sign ES256 (another curve, say) is refused here rather than on the first API call.
    pub fn from_pem(
        key_id: impl Into<String>,
        issuer_id: Option<String>,
        pem: &[u8],
    ) -> Result<Self, TokenError> {
        let key_id = key_id.into();
        if key_id.trim().is_empty() || key_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(TokenError::KeyIdInvalid { key_id });
        }
        if issuer_id.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(TokenError::IssuerIdEmpty);
        }
        let key = EncodingKey::from_ec_pem(pem).map_err(|source| TokenError::KeyInvalid {
            key_id: key_id.clone(),
            hint: pem_hint(pem),
            source,
        })?;
        let api_key = ApiKey {
            key_id,
            issuer_id,
            key,
        };
        api_key
            .mint_at(Timestamp::UNIX_EPOCH)
            .map_err(|err| match err {
                TokenError::Sign { key_id, source } => TokenError::KeyInvalid {
                    key_id,
                    hint: "the PEM holds an EC key, but not a P-256 one; App Store Connect keys are P-256",
                    source,
                },
                other => other,
            })?;
        Ok(api_key)
    }

    /// The key id (`kid` header).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The issuer id, for team keys.
    pub fn issuer_id(&self) -> Option<&str> {
        self.issuer_id.as_deref()
    }

    /// Team or individual, from whether an issuer id was given.
    pub fn kind(&self) -> KeyKind {
        match self.issuer_id {
            Some(_) => KeyKind::Team,
            None => KeyKind::Individual,
        }
    }

    /// Mints a token as if the current time were `now`: `iat = now - 60 s`, `exp = now + 5 min`.
    pub fn mint_at(&self, now: Timestamp) -> Result<AccessToken, TokenError> {
        self.mint_scoped_at(now, None)
    }

    /// Like [`ApiKey::mint_at`], limited to one request (`"GET /v1/apps?limit=1"`) when `scope` is given.
    pub fn mint_scoped_at(
        &self,
        now: Timestamp,
        scope: Option<&str>,
    ) -> Result<AccessToken, TokenError> {
        let now = now.as_second();
        let exp = now + LIFETIME_SECS;
        let claims = Claims {
            iss: self.issuer_id.as_deref(),
            sub: self.issuer_id.is_none().then_some("user"),
            iat: now - BACKDATE_SECS,
            exp,
            aud: AUDIENCE,
            scope: scope.map(|s| [s]),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = Some("JWT".to_owned());
        let value = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|source| {
            TokenError::Sign {
                key_id: self.key_id.clone(),
                source,
            }
        })?;
        Ok(AccessToken {
            value: value.into(),
            expires_at: exp,
            scope: scope.map(str::to_owned),
        })
    }
}

/// Names the likely mistake from the PEM label alone, so the message helps without echoing the key.
fn pem_hint(pem: &[u8]) -> &'static str {
    let has = |label: &[u8]| pem.windows(label.len()).any(|w| w == label);
    if !has(b"-----BEGIN ") {
        "not PEM text; paste the whole .p8 file including the BEGIN/END PRIVATE KEY lines"
    } else if has(b"BEGIN PUBLIC KEY") {
        "this is a public key; App Store Connect needs the private .p8 key"
    } else if has(b"BEGIN EC PRIVATE KEY") {
        "SEC1 'EC PRIVATE KEY' PEM; use the .p8 file as downloaded, \
         or convert with `openssl pkcs8 -topk8 -nocrypt`"
    } else {
        "not a PKCS#8 EC private key; use the .p8 file exactly as downloaded from App Store Connect"
    }
}

/// A signed token. `Debug` shows only its expiry; read the value with [`AccessToken::expose`] when
/// building the `Authorization` header, and nowhere else.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<str>,
    expires_at: i64,
    scope: Option<String>,
}

impl AccessToken {
    /// The compact JWT. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Expiry (`exp`) as Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// The one request the token is limited to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Where [`TokenSource`] reads the time, so refresh decisions can be tested without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Hands out tokens for one key, minting a new one only when the cached one is close to expiry.
///
/// Cheap to clone; clones share the cache. Concurrent callers that find the token stale wait on one lock,
/// so a refresh mints exactly once instead of once per caller.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    key: ApiKey,
    clock: Arc<dyn Clock>,
    cached: tokio::sync::Mutex<Option<AccessToken>>,
    minted: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.inner.key)
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source on the system clock.
    pub fn new(key: ApiKey) -> Self {
        Self::with_clock(key, Arc::new(SystemClock))
    }

    /// A source on the given clock.
    pub fn with_clock(key: ApiKey, clock: Arc<dyn Clock>) -> Self {
        TokenSource {
            inner: Arc::new(Inner {
                key,
                clock,
                cached: tokio::sync::Mutex::new(None),
                minted: AtomicU64::new(0),
            }),
        }
    }

    /// The key this source signs with.
    pub fn key(&self) -> &ApiKey {
        &self.inner.key
    }

    /// An unscoped token with at least [`REFRESH_MARGIN_SECS`] left, reusing the cached one when it
    /// qualifies.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.token_for(None).await
    }

    /// A token limited to `scope` (e.g. `"GET /v1/buildUploads/123"`), reused only for the same scope:
    /// the retries of one call share a token, the next call gets its own.
    pub async fn token_for(&self, scope: Option<&str>) -> Result<AccessToken, TokenError> {
        let mut cached = self.inner.cached.lock().await;
        let now = self.inner.clock.now();
        if let Some(token) = cached.as_ref()
            && token.scope.as_deref() == scope
            && now.as_second() + REFRESH_MARGIN_SECS < token.expires_at
        {
            return Ok(token.clone());
        }
        let fresh = self.inner.key.mint_scoped_at(now, scope)?;
        self.inner.minted.fetch_add(1, Ordering::Relaxed);
        let (key_id, expires_at) = (&self.inner.key.key_id, fresh.expires_at);
        tracing::debug!(%key_id, expires_at, "minted App Store Connect API token");
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the cached token so the next call mints a new one (after Apple refused the current one).
    pub async fn invalidate(&self) {
        *self.inner.cached.lock().await = None;
    }

    /// How many tokens this source has minted so far.
    pub fn minted(&self) -> u64 {
        self.inner.minted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Value;
    use testkit::asc_mock::{AscMock, AscMockOptions, AuthOutcome, MockKeyKind};

    const PEM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"
    ));
    const PUB_PEM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.pub.pem"
    ));
    const KEY_ID: &str = "TEST2K9Q7X";
    const ISSUER: &str = "69a6de70-03db-47e3-e053-5b8c7c11a4d1";

    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl ManualClock {
        fn at(secs: i64) -> Arc<Self> {
            Arc::new(ManualClock(AtomicI64::new(secs)))
        }
        fn advance(&self, secs: i64) {
            self.0.fetch_add(secs, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_second(self.0.load(Ordering::SeqCst)).unwrap()
        }
    }

    fn team_key() -> ApiKey {
        ApiKey::from_pem(KEY_ID, Some(ISSUER.to_owned()), PEM).unwrap()
    }

    fn decode(token: &AccessToken) -> (Header, Value) {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(
            token.expose(),
            &DecodingKey::from_ec_pem(PUB_PEM).unwrap(),
            &validation,
        )
        .unwrap();
        (data.header, data.claims)
    }

    fn other_p256_pem() -> String {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = loop {
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    #[test]
    fn tokens_live_minutes_and_a_scoped_one_names_its_request() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let token = team_key()
            .mint_scoped_at(now, Some("GET /v1/buildUploads/42"))
            .unwrap();
        let (_, claims) = decode(&token);
        assert_eq!(
            claims["scope"],
            serde_json::json!(["GET /v1/buildUploads/42"])
        );
        let lifetime = claims["exp"].as_i64().unwrap() - 1_700_000_000;
        assert!(
            lifetime <= 5 * 60,
            "{lifetime} s is more than a few minutes"
        );
        let (_, unscoped) = decode(&team_key().mint_at(now).unwrap());
        assert!(unscoped.get("scope").is_none());
    }

    #[tokio::test]
    async fn a_scoped_token_is_reused_only_for_the_same_request() {
        let clock = ManualClock::at(1_700_000_000);
        let source = TokenSource::with_clock(team_key(), clock.clone());
        let a = source.token_for(Some("GET /v1/a")).await.unwrap();
        let again = source.token_for(Some("GET /v1/a")).await.unwrap();
        assert_eq!(a.expose(), again.expose());
        let b = source.token_for(Some("GET /v1/b")).await.unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(b.scope(), Some("GET /v1/b"));
        assert_eq!(source.minted(), 2);
    }

    #[test]
    fn team_token_has_apple_header_and_claims_within_twenty_minutes() {
        let token = team_key()
            .mint_at(Timestamp::from_second(1_700_000_000).unwrap())
            .unwrap();
        let (header, claims) = decode(&token);
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(KEY_ID));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], AUDIENCE);
        assert!(claims.get("sub").is_none());
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(
            iat,
            1_700_000_000 - BACKDATE_SECS,
            "iat is backdated for clock skew"
        );
        assert!(
            exp - iat <= MAX_TOKEN_SPAN_SECS,
            "span {} includes the backdate",
            exp - iat
        );
        assert_eq!(token.expires_at(), exp);
    }

    #[test]
    fn individual_token_has_sub_user_and_no_iss() {
        let key = ApiKey::from_pem(KEY_ID, None, PEM).unwrap();
        assert_eq!(key.kind(), KeyKind::Individual);
        let (_, claims) = decode(&key.mint_at(Timestamp::now()).unwrap());
        assert_eq!(claims["sub"], "user");
        assert!(claims.get("iss").is_none());
    }

    #[test]
    fn invalid_pem_is_refused_without_echoing_the_key() {
        let garbage =
            b"-----BEGIN PRIVATE KEY-----\nTUlJQ1NFQ1JFVGtleW1hdGVyaWFs\n-----END PRIVATE KEY-----\n";
        for (pem, hint_part) in [
            (&garbage[..], "PKCS#8"),
            (PUB_PEM, "public key"),
            (b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49".as_slice(), "not PEM"),
        ] {
            let err = ApiKey::from_pem(KEY_ID, None, pem).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(matches!(err, TokenError::KeyInvalid { .. }), "{text}");
            assert!(text.contains(hint_part), "{text}");
            assert!(!text.contains("TUlJQ1NFQ1JFVGtleW1hdGVyaWFs") && !text.contains("MIGHAgEA"));
        }
    }

    #[test]
    fn ec_key_on_another_curve_is_refused_at_load() {
        // A throwaway P-384 key (openssl genpkey ... ec_paramgen_curve:P-384 | openssl pkcs8 -topk8).
        let p384 = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCGgK/Qj1qS2kYjsQOZ
u5EsN5t5KLXswPqV0fRqU1A5kUyQHWOXmYEHuqFYLZZrYPKhZANiAAQaPQQz9SJf
rgsEjWBUkbDOqkgrL9bSbdxh2aETEUP+YKkrXbsu1Csfe/RweF8PNBxkcdsmixaa
OtonkmzQzEfBJWR+pA2Aw5lb+502/LWV5tVD6emy+kG9zPrV3XgS1Zs=
-----END PRIVATE KEY-----
";
        let err = ApiKey::from_pem(KEY_ID, None, p384.as_bytes()).unwrap_err();
        assert!(matches!(err, TokenError::KeyInvalid { .. }), "{err:?}");
        assert!(err.to_string().contains("not a P-256 one"), "{err}");
    }

    #[test]
    fn empty_issuer_and_key_id_are_refused() {
        assert!(matches!(
            ApiKey::from_pem(KEY_ID, Some(" ".into()), PEM),
            Err(TokenError::IssuerIdEmpty)
        ));
        assert!(matches!(
            ApiKey::from_pem("", None, PEM),
            Err(TokenError::KeyIdInvalid { .. })
        ));
    }

    #[test]
    fn debug_output_redacts_key_and_token() {
        let key = team_key();
        let token = key.mint_at(Timestamp::now()).unwrap();
        let source = TokenSource::new(key.clone());
        let debug = format!("{key:?} {token:?} {source:?}");
        assert!(debug.contains("<redacted>") && debug.contains(KEY_ID));
        assert!(!debug.contains(token.expose()));
        let pem_body = std::str::from_utf8(PEM).unwrap().lines().nth(1).unwrap();
        assert!(!debug.contains(pem_body));
    }

    #[tokio::test]
    async fn cache_reuses_token_until_refresh_margin_then_mints_again() {
        let clock = ManualClock::at(1_700_000_000);
        let source = TokenSource::with_clock(team_key(), clock.clone());
        let first = source.token().await.unwrap();
        clock.advance(LIFETIME_SECS - REFRESH_MARGIN_SECS - 1);
        let reused = source.token().await.unwrap();
        assert_eq!(first.expose(), reused.expose());
        assert_eq!(source.minted(), 1);
        clock.advance(1);
        let refreshed = source.token().await.unwrap();
        assert_ne!(first.expose(), refreshed.expose());
        assert_eq!(
            refreshed.expires_at(),
            first.expires_at() + LIFETIME_SECS - REFRESH_MARGIN_SECS
        );
        assert_eq!(source.minted(), 2);
        source.invalidate().await;
        source.token().await.unwrap();
        assert_eq!(source.minted(), 3, "an invalidated token is not reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_callers_mint_once() {
        let clock = ManualClock::at(1_700_000_000);
        let source = TokenSource::with_clock(team_key(), clock.clone());
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.token().await.unwrap() })
            })
            .collect();
        let tokens = futures::future::join_all(calls).await;
        assert_eq!(source.minted(), 1);
        let first = tokens[0].as_ref().unwrap().expose().to_owned();
        assert!(tokens.iter().all(|t| t.as_ref().unwrap().expose() == first));

        clock.advance(LIFETIME_SECS);
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.token().await.unwrap() })
            })
            .collect();
        futures::future::join_all(calls).await;
        assert_eq!(
            source.minted(),
            2,
            "a refresh under load mints once, not once per caller"
        );
    }

    async fn mock() -> AscMock {
        AscMock::start(AscMockOptions::default()).await.unwrap()
    }

    async fn status_for(mock: &AscMock, token: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/v1/apps?limit=1", mock.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn team_and_individual_tokens_are_accepted_by_mock() {
        let mock = mock().await;
        let team = team_key().mint_at(Timestamp::now()).unwrap();
        let individual = ApiKey::from_pem(KEY_ID, None, PEM)
            .unwrap()
            .mint_at(Timestamp::now())
            .unwrap();
        assert_eq!(status_for(&mock, team.expose()).await, 200);
        assert_eq!(status_for(&mock, individual.expose()).await, 200);
        let seen: Vec<_> = mock.requests().into_iter().map(|r| r.auth).collect();
        assert_eq!(
            seen,
            [
                AuthOutcome::Accepted(MockKeyKind::Team),
                AuthOutcome::Accepted(MockKeyKind::Individual)
            ]
        );
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn expired_token_is_refused_by_mock() {
        let mock = mock().await;
        let long_ago = Timestamp::now() - jiff::SignedDuration::from_secs(LIFETIME_SECS + 60);
        let expired = team_key().mint_at(long_ago).unwrap();
        assert_eq!(status_for(&mock, expired.expose()).await, 401);
        assert!(!mock.requests()[0].auth.is_accepted());
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn token_signed_with_another_key_is_refused_by_mock() {
        let mock = mock().await;
        let pem = other_p256_pem();
        let stranger = ApiKey::from_pem(KEY_ID, Some(ISSUER.into()), pem.as_bytes()).unwrap();
        let token = stranger.mint_at(Timestamp::now()).unwrap();
        assert_eq!(status_for(&mock, token.expose()).await, 401);
        assert!(
            matches!(&mock.requests()[0].auth, AuthOutcome::Rejected(reason) if reason.contains("signature"))
        );
        mock.shutdown().await;
    }
}
