//! The URL of an event's object: Apple's payloads link it in several shapes, or not at all.

use super::{ALTERNATIVE_DISTRIBUTION_HOST, ApiError, AscClient};
use serde_json::Value;
use url::Url;

impl AscClient {
    /// Where the API serves an event's object: its `links.self` (a relative one joined to the API URL,
    /// one on Apple's alternative-distribution host moved onto the API origin), or `/v1/{type}/{id}` when
    /// the event carries none, as several of Apple's documented examples do. The result is still
    /// origin-checked when fetched.
    pub fn instance_url(
        &self,
        kind: &str,
        id: &str,
        links_self: Option<&str>,
    ) -> Result<Url, ApiError> {
        let invalid = |url: &str| {
            let url = url.to_owned();
            move |source| ApiError::InvalidUrl { url, source }
        };
        let Some(link) = links_self.filter(|l| !l.trim().is_empty()) else {
            let mut url = self.api_url.clone();
            url.set_query(None);
            url.path_segments_mut()
                .map_err(|()| ApiError::UnsupportedScheme {
                    url: self.api_url.to_string(),
                })?
                .clear()
                .extend(["v1", kind, id]);
            return Ok(url);
        };
        let mut url = self.api_url.join(link).map_err(invalid(link))?;
        if url.scheme() == "https" && url.host_str() == Some(ALTERNATIVE_DISTRIBUTION_HOST) {
            let mut moved = self.api_url.join(url.path()).map_err(invalid(link))?;
            moved.set_query(url.query());
            url = moved;
        }
        Ok(url)
    }

    /// Fetches an event's object at [`instance_url`](Self::instance_url).
    pub async fn fetch_instance_of(
        &self,
        kind: &str,
        id: &str,
        links_self: Option<&str>,
    ) -> Result<Value, ApiError> {
        let url = self.instance_url(kind, id, links_self)?;
        self.get_url(url).await
    }
}
