//! Which App Store Connect API origins credentials may use (`--asc-api-origins`).
//!
//! An `AscCredential` names both a private key Secret and an `apiUrl`. Without a list of allowed origins,
//! anyone who may create a credential could name another team's key Secret and point `apiUrl` at their own
//! host, and the operator would mint tokens from that key and send them there. The list is checked before a
//! key is read, so a refused credential never causes a token to exist.

use std::fmt;
use url::Url;

/// Why an origin given on the command line is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an http(s) origin like https://api.appstoreconnect.apple.com")]
pub struct InvalidOrigin(pub String);

/// A list of allowed origins (`scheme://host[:port]`), compared exactly as browsers compare origins.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl Default for AllowedOrigins {
    fn default() -> Self {
        AllowedOrigins(vec![
            origin_of(crate::resources::names::DEFAULT_API_URL).unwrap_or_default(),
        ])
    }
}

/// Parses one origin for clap: a URL with nothing but scheme, host and port (a trailing `/` is fine).
pub fn parse_origin(s: &str) -> Result<String, InvalidOrigin> {
    let invalid = || InvalidOrigin(s.to_owned());
    let url = Url::parse(s.trim()).map_err(|_| invalid())?;
    let bare = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !bare {
        return Err(invalid());
    }
    origin_of(s.trim()).ok_or_else(invalid)
}

fn origin_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

impl AllowedOrigins {
    /// The list from already-parsed origins (see [`parse_origin`]).
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        AllowedOrigins(origins.into_iter().collect())
    }

    /// Whether `api_url`'s origin is on the list; the error is a sentence for the credential's condition.
    pub fn check(&self, api_url: &str) -> Result<(), String> {
        match origin_of(api_url) {
            Some(origin) if self.0.contains(&origin) => Ok(()),
            Some(origin) => Err(format!(
                "apiUrl origin {origin} is not allowed by the operator (--asc-api-origins: {}); \
                 no token is sent there",
                self.0.join(", ")
            )),
            None => Err(format!("apiUrl {api_url:?} is not an http(s) URL")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_is_allowed_by_default_and_other_hosts_are_not() {
        let allowed = AllowedOrigins::default();
        assert!(
            allowed
                .check("https://api.appstoreconnect.apple.com")
                .is_ok()
        );
        assert!(
            allowed
                .check("https://api.appstoreconnect.apple.com/")
                .is_ok()
        );
        let err = allowed
            .check("https://api.appstoreconnect.apple.com.evil.example")
            .unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
        assert!(
            allowed
                .check("http://api.appstoreconnect.apple.com")
                .is_err()
        );
        assert!(
            allowed
                .check("https://api.appstoreconnect.apple.com:8443")
                .is_err()
        );
        assert!(allowed.check("not a url").is_err());
    }

    #[test]
    fn origins_on_the_command_line_must_be_bare() {
        assert_eq!(
            parse_origin("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert_eq!(
            parse_origin("HTTPS://API.Example.com:443").as_deref(),
            Ok("https://api.example.com")
        );
        assert!(parse_origin("https://h/v1").is_err());
        assert!(parse_origin("https://user@h").is_err());
        assert!(parse_origin("ftp://h").is_err());
        let allowed = AllowedOrigins::new([parse_origin("http://127.0.0.1:8080").unwrap()]);
        assert!(allowed.check("http://127.0.0.1:8080/v1").is_ok());
        assert!(allowed.check("http://localhost:8080").is_err());
    }
}
